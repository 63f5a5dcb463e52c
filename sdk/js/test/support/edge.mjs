// Starts and stops real `plaza-edge --dev` processes for the integration tests.
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { createServer } from "node:net";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const repoRoot = path.resolve(here, "../../../..");

/** A known HS256 secret for the test edges (test-only, ≥ 32 bytes). */
export const SECRET = "plaza-sdk-tests-secret-0123456789abcdef";
/** The server API key of the test edges. */
export const API_KEY = "plaza-sdk-tests-api-key-0123456789";

/** The plaza-edge binary: $PLAZA_EDGE_BIN, else target/debug/plaza-edge of the repo. */
export function edgeBinary() {
  const bin = process.env.PLAZA_EDGE_BIN
    ? path.resolve(process.env.PLAZA_EDGE_BIN)
    : path.join(repoRoot, "target/debug/plaza-edge");
  if (!existsSync(bin)) {
    throw new Error(
      `plaza-edge not found at ${bin}: build it with \`cargo build -p plaza-edge --bin plaza-edge\` ` +
        "and/or set PLAZA_EDGE_BIN (scripts/test-sdk.sh does this)",
    );
  }
  return bin;
}

/** A free TCP port on 127.0.0.1 (for an edge that must come back on the same address). */
export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

const running = new Set();
process.on("exit", () => {
  for (const child of running) child.kill("SIGKILL");
});
// Interrupted runs still stop their edges (the exit hook above runs on process.exit).
for (const signal of ["SIGINT", "SIGTERM"]) process.once(signal, () => process.exit(130));

/**
 * Starts `plaza-edge --dev` with the test secret and API key. Resolves with
 * `{ wsUrl, httpUrl, port, stop(), kill() }` once it listens.
 */
export async function startEdge({ port = 0, env = {} } = {}) {
  const child = spawn(edgeBinary(), ["--dev", "--listen", `127.0.0.1:${port}`], {
    env: {
      ...process.env,
      PLAZA_AUTH__HMAC_SECRET: SECRET,
      PLAZA_API__KEYS: JSON.stringify([API_KEY]),
      PLAZA_LOG: process.env.PLAZA_LOG ?? "warn",
      ...env,
    },
    stdio: ["ignore", "pipe", "pipe"],
  });
  running.add(child);
  let stderr = "";
  child.stderr.on("data", (d) => {
    stderr = (stderr + d).slice(-4000);
  });
  const httpUrl = await new Promise((resolve, reject) => {
    let out = "";
    const timer = setTimeout(() => reject(new Error(`plaza-edge did not start within 15 s:\n${stderr}`)), 15_000);
    // The dev banner (stdout) names the address (it holds no token).
    child.stdout.on("data", (d) => {
      out += d;
      const m = out.match(/websocket:\s+ws:\/\/([^/\s]+)\/v1\/ws/);
      if (m) {
        clearTimeout(timer);
        resolve(`http://${m[1]}`);
      }
    });
    child.on("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`plaza-edge exited with ${code} before listening:\n${stderr}`));
    });
  });
  const exited = new Promise((resolve) => child.on("exit", resolve));
  const addr = new URL(httpUrl);
  return {
    httpUrl,
    wsUrl: `ws://${addr.host}/v1/ws`,
    port: Number(addr.port),
    /** Kills the process at once (no drain: like a crash). */
    async kill() {
      child.kill("SIGKILL");
      await exited;
      running.delete(child);
    },
    /** SIGTERM, then SIGKILL if it lingers. */
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) {
        running.delete(child);
        return;
      }
      child.kill("SIGTERM");
      const t = setTimeout(() => child.kill("SIGKILL"), 3000);
      await exited;
      clearTimeout(t);
      running.delete(child);
    },
  };
}

/** Calls the edge's server API (POST with a JSON body, or GET). */
export async function api(edge, pathname, body) {
  const res = await fetch(`${edge.httpUrl}/v1/api${pathname}`, {
    method: body === undefined ? "GET" : "POST",
    headers: {
      Authorization: `Bearer ${API_KEY}`,
      ...(body === undefined ? {} : { "Content-Type": "application/json" }),
    },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const json = await res.json();
  if (!res.ok) throw new Error(`API ${pathname}: ${res.status} ${JSON.stringify(json)}`);
  return json;
}
