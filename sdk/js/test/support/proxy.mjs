// A TCP proxy the tests can cut and restore, to drop client connections while the edge lives.
import { createServer, connect } from "node:net";

/**
 * Listens on 127.0.0.1:<random> and forwards to `target` ("host:port").
 * `cut()` destroys every proxied connection and refuses new ones until `restore()`.
 * `blackholeReplies(true)` keeps forwarding client bytes but drops the edge's (a connection
 * that looks alive to the client while its replies are lost).
 */
export async function startProxy(target) {
  const [host, port] = [target.slice(0, target.lastIndexOf(":")), Number(target.slice(target.lastIndexOf(":") + 1))];
  const sockets = new Set();
  let open = true;
  let blackhole = false;
  const server = createServer((client) => {
    if (!open) {
      client.destroy();
      return;
    }
    const upstream = connect(port, host);
    sockets.add(client);
    sockets.add(upstream);
    client.on("data", (d) => upstream.write(d));
    upstream.on("data", (d) => {
      if (!blackhole) client.write(d);
    });
    const end = () => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    client.on("error", end);
    upstream.on("error", end);
    client.on("close", end);
    upstream.on("close", end);
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port: listenPort } = server.address();
  return {
    wsUrl: `ws://127.0.0.1:${listenPort}/v1/ws`,
    get connections() {
      return sockets.size / 2;
    },
    cut() {
      open = false;
      for (const s of sockets) s.destroy();
      sockets.clear();
    },
    restore() {
      open = true;
      blackhole = false;
    },
    blackholeReplies(on) {
      blackhole = on;
    },
    close() {
      open = false;
      for (const s of sockets) s.destroy();
      return new Promise((resolve) => server.close(resolve));
    },
  };
}
