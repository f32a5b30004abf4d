/** Spawn the CLI as a user would (`deno run main.ts ...`) and collect exit code, stdout and stderr. */
export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

const runtimeDir = Deno.makeTempDirSync({ prefix: "edgetrain-xdg-" });
Deno.chmodSync(runtimeDir, 0o700);
globalThis.addEventListener("unload", () => Deno.removeSync(runtimeDir, { recursive: true }));

export async function runCli(
  args: string[],
  options: { cwd?: string; env?: Record<string, string> } = {},
): Promise<CliResult> {
  const main = new URL("../../main.ts", import.meta.url).pathname;
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--unstable-webgpu", main, ...args],
    cwd: options.cwd,
    env: { EDGETRAIN_PROGRESS: "0", NO_COLOR: "1", XDG_RUNTIME_DIR: runtimeDir, ...options.env },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

export const STREAMS = "fixtures/streams/mnist_c";

export function stream(name: string): string[] {
  return [
    "--images",
    `${STREAMS}/${name}-images-idx3-ubyte.gz`,
    "--labels",
    `${STREAMS}/${name}-labels-idx1-ubyte.gz`,
  ];
}
