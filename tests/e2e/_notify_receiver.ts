/**
 * Stands in for systemd's notify socket in tests: binds an AF_UNIX SOCK_DGRAM socket at Deno.args[0] and
 * prints every datagram it receives as one JSON line ({"text": ...}) on stdout, after a first {"bound": path}.
 * Run with --unstable-net (Deno.listenDatagram), in its own process so the test runner needs no unstable flag.
 */
const path = Deno.args[0];
const conn = Deno.listenDatagram({ transport: "unixpacket", path });
console.log(JSON.stringify({ bound: path }));
for (;;) {
  const [data] = await conn.receive();
  console.log(JSON.stringify({ text: new TextDecoder().decode(data) }));
}
