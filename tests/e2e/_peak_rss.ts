/**
 * Runs the CLI (main.ts's main) in this process, then prints this process's peak resident set size
 * (VmHWM from /proc/self/status, Linux) on stderr as `peak_rss_kib=N`, and exits with the CLI's code. Tests
 * spawn it as they would spawn the CLI, to measure what a hostile input costs.
 */
import { main } from "../../main.ts";

const code = await main(Deno.args);
const status = await Deno.readTextFile("/proc/self/status").catch(() => "");
console.error(`peak_rss_kib=${/VmHWM:\s+(\d+) kB/.exec(status)?.[1] ?? "unknown"}`);
Deno.exit(code);
