/**
 * Headless chromium for the report page: the browser test (tests/e2e/report_browser_test.ts) and the committed
 * screenshot (tools/bank_recurring.ts). One list of flags keeps both offline and quiet: no sandbox (CI runs
 * as root), no GPU, no network services, a throw-away profile.
 */

const CANDIDATES = ["chromium", "chromium-browser", "google-chrome"];

/** The first chromium-like browser on PATH, or null. */
export function findChromium(): string | null {
  for (const dir of (Deno.env.get("PATH") ?? "").split(":")) {
    for (const name of CANDIDATES) {
      try {
        if (Deno.statSync(`${dir}/${name}`).isFile) return `${dir}/${name}`;
      } catch {
        // not here
      }
    }
  }
  return null;
}

/** Runs `browser` headless on the page at `path` with `extra` flags; stdout and stderr come back as text. */
export async function headless(
  browser: string,
  path: string,
  extra: string[],
): Promise<{ success: boolean; code: number; stdout: string; stderr: string }> {
  const profile = await Deno.makeTempDir({ prefix: "edgetrain-chromium-" });
  try {
    const out = await new Deno.Command(browser, {
      args: [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        `--user-data-dir=${profile}`,
        ...extra,
        `file://${await Deno.realPath(path)}`,
      ],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const text = (b: Uint8Array) => new TextDecoder().decode(b);
    return { success: out.success, code: out.code, stdout: text(out.stdout), stderr: text(out.stderr) };
  } finally {
    await Deno.remove(profile, { recursive: true });
  }
}
