// What the browser end-to-end tests share: a real plaza-edge, the example built and served by
// `next start`, headless Chromium, and helpers to sign in, wait, read the page and talk to the
// edge the way an attacker would (a raw WebSocket, a hand-made token, the server API).
import { spawn } from "node:child_process";
import { createHmac, randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { createServer } from "node:net";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const here = path.dirname(fileURLToPath(import.meta.url));
export const app = path.resolve(here, "..");
const repo = path.resolve(app, "../..");
const edgeBin = path.resolve(process.env.PLAZA_EDGE_BIN ?? path.join(repo, "target/debug/plaza-edge"));
const chromiumPath = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
export const artifacts = path.resolve(process.env.ARTIFACT_DIR ?? path.join(repo, "target/test-artifacts"));

/** The room the example uses (app/room.ts). */
export const ROOM = "chat:lobby";

const children = [];
process.on("exit", () => children.forEach((c) => c.kill("SIGKILL")));
// Interrupted runs still stop the edge and Next.js (the exit hook above runs on process.exit).
for (const signal of ["SIGINT", "SIGTERM"]) process.once(signal, () => process.exit(130));

export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/** Spawns a process and resolves once `ready` matches its output. */
export function run(cmd, args, { env, cwd, ready, what }) {
  const child = spawn(cmd, args, { cwd, env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] });
  children.push(child);
  let log = "";
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${what} not ready within 60 s:\n${log.slice(-3000)}`)), 60_000);
    const onData = (d) => {
      log += d;
      const m = log.match(ready);
      if (m) {
        clearTimeout(timer);
        resolve({ child, match: m });
      }
    };
    child.stdout.on("data", onData);
    child.stderr.on("data", (d) => {
      log = (log + d).slice(-20000);
    });
    child.on("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`${what} exited with ${code}:\n${log.slice(-3000)}`));
    });
  });
}

/** Starts `next <mode>` (start or dev) of the example on a free port; returns its URL. */
export async function startNext(stack, mode) {
  const port = await freePort();
  await run(process.execPath, [path.join(app, "node_modules/next/dist/bin/next"), mode, "-p", String(port), "-H", "127.0.0.1"], {
    cwd: app,
    env: stack.appEnv,
    ready: /Ready in|✓ Ready/,
    what: `next ${mode}`,
  });
  return `http://127.0.0.1:${port}`;
}

/**
 * Starts a plaza-edge (fresh secret and API key), `next start` of the built example and
 * Chromium. The secret and key are random per run and never printed.
 */
export async function startStack() {
  if (!existsSync(edgeBin)) {
    throw new Error(`plaza-edge not found at ${edgeBin}: build it (cargo build -p plaza-edge) or set PLAZA_EDGE_BIN; scripts/test-sdk.sh does both`);
  }
  if (!existsSync(chromiumPath)) {
    throw new Error(`Chromium not found at ${chromiumPath}: scripts/test-sdk.sh installs it (apt-get install chromium)`);
  }
  if (!existsSync(path.join(app, ".next/BUILD_ID"))) {
    throw new Error("the example is not built: run `npm run build` in examples/nextjs-chat (scripts/test-sdk.sh does)");
  }
  const secret = randomBytes(32).toString("hex");
  const apiKey = randomBytes(24).toString("hex");
  const edge = await run(edgeBin, ["--dev", "--listen", "127.0.0.1:0"], {
    env: {
      PLAZA_AUTH__HMAC_SECRET: secret,
      PLAZA_API__KEYS: JSON.stringify([apiKey]),
      PLAZA_LOG: "warn",
      // The live counter's namespace: live-state rooms (see the example's README).
      PLAZA_ROOMS__NAMESPACES__COUNTER__STATE__ENABLED: "true",
    },
    ready: /websocket:\s+ws:\/\/([^/\s]+)\/v1\/ws/,
    what: "plaza-edge",
  });
  const edgeHost = edge.match[1];
  const stack = {
    secret,
    apiKey,
    edgeHttp: `http://${edgeHost}`,
    edgeWs: `ws://${edgeHost}/v1/ws`,
    appEnv: { PLAZA_URL: `http://${edgeHost}`, PLAZA_SECRET: secret, PLAZA_API_KEY: apiKey, NEXT_TELEMETRY_DISABLED: "1" },
  };
  stack.appUrl = await startNext(stack, "start");
  stack.contexts = [];
  stack.browser = await chromium.launch({
    executablePath: chromiumPath,
    headless: true,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
  return stack;
}

/**
 * Closes every browser context the test opened (its pages, their sockets and so their presence
 * go too), so a test that failed halfway does not leave members or state for the next one.
 */
export async function closeContexts(stack) {
  const contexts = stack?.contexts.splice(0) ?? [];
  await Promise.all(contexts.map((c) => c.close()));
}

export async function stopStack(stack) {
  await stack?.browser?.close();
  for (const c of children) c.kill("SIGTERM");
}

/**
 * A new browser context (its own cookie jar = its own user) signed in as `name`, once its
 * chat is connected. `errors` collects page errors and console errors.
 */
export async function signIn(stack, name, url = stack.appUrl) {
  const context = await stack.browser.newContext({ viewport: { width: 960, height: 640 } });
  stack.contexts.push(context);
  const page = await context.newPage();
  const errors = [];
  const sockets = [];
  page.on("pageerror", (e) => errors.push(e));
  page.on("console", (m) => m.type() === "error" && errors.push(new Error(`${m.text()} (${m.location().url})`)));
  page.on("websocket", (ws) => ws.url().includes("/v1/ws") && sockets.push(ws.url()));
  await page.goto(url, { timeout: 90_000 });
  await page.getByTestId("name").fill(name);
  await page.getByTestId("signin").click();
  await page.getByTestId("connection").filter({ hasText: "connected" }).waitFor({ timeout: 60_000 });
  return { name, page, context, errors, sockets };
}

/** Sends `text` with the page's chat form (the `sendMessage` server action). */
export async function send(user, text) {
  await user.page.getByTestId("draft").fill(text);
  await user.page.getByTestId("send").click();
}

/** Waits until the page has loaded the room's recent messages (its list stops growing from the past). */
export const historyLoaded = (page) => page.locator('[data-testid="messages"][data-loaded="true"]').waitFor({ timeout: 30_000 });

export const memberNames = (page) => page.getByTestId("member").allInnerTexts();
export const messageTexts = (page) => page.getByTestId("message").allInnerTexts();

/**
 * Polls `fn` until it returns something truthy. With `watch` (signed-in users), fails at once
 * when one of their pages has thrown, with the error, instead of timing out later.
 */
export async function until(what, fn, timeoutMs = 15_000, ...watch) {
  const start = Date.now();
  for (;;) {
    for (const user of watch) {
      if (user.errors.length > 0) throw new Error(`${what}: ${user.name}'s page failed: ${user.errors.map(String).join("; ")}`);
    }
    const v = await fn();
    if (v) return v;
    if (Date.now() - start > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** An HS256 Plaza token signed with the edge's secret, carrying `plaza` as its capability claim. */
export function mintToken(stack, sub, plaza) {
  const b64url = (v) => Buffer.from(JSON.stringify(v)).toString("base64url");
  const now = Math.floor(Date.now() / 1000);
  const unsigned = `${b64url({ alg: "HS256", typ: "JWT" })}.${b64url({ sub, iat: now, exp: now + 600, plaza })}`;
  return `${unsigned}.${createHmac("sha256", stack.secret).update(unsigned).digest("base64url")}`;
}

/** Publishes `data` to `room` with the edge's server API (POST /v1/api/publish). */
export async function apiPublish(stack, room, data) {
  const res = await fetch(`${stack.edgeHttp}/v1/api/publish`, {
    method: "POST",
    headers: { Authorization: `Bearer ${stack.apiKey}`, "Content-Type": "application/json" },
    body: JSON.stringify({ room, data }),
  });
  if (!res.ok) throw new Error(`server API publish: ${res.status} ${await res.text()}`);
  return res.json();
}

/**
 * Speaks the client protocol by hand from inside `page` (a browser WebSocket, no SDK): connect
 * with `token` (default: the one the app's /api/plaza-token hands this page's user), subscribe
 * to `room`, publish each of `publications` in turn, and, with `holdMs`, stay subscribed (and
 * so present) that long before closing. Returns every reply, in order.
 */
export function rawClient(page, { wsUrl, room = ROOM, token, publications = [], holdMs = 0 }) {
  return page.evaluate(
    async ({ wsUrl, room, token, publications, holdMs }) => {
      if (!token) token = (await (await fetch("/api/plaza-token", { cache: "no-store" })).json()).token;
      const ws = new WebSocket(wsUrl, "plaza.v1");
      const waiting = new Map();
      ws.onmessage = (e) => {
        const frame = JSON.parse(e.data);
        if (frame.id !== undefined) waiting.get(frame.id)?.(frame);
      };
      await new Promise((resolve, reject) => {
        ws.onopen = resolve;
        ws.onerror = () => reject(new Error(`WebSocket to ${wsUrl} failed`));
      });
      let nextId = 1;
      const call = (command) =>
        new Promise((resolve, reject) => {
          const id = nextId++;
          const timer = setTimeout(() => reject(new Error(`no reply to ${command.op}`)), 10_000);
          waiting.set(id, (frame) => {
            clearTimeout(timer);
            resolve(frame);
          });
          ws.send(JSON.stringify({ id, ...command }));
        });
      const replies = [await call({ op: "connect", token, name: "raw-e2e" })];
      replies.push(await call({ op: "subscribe", room }));
      for (const data of publications) replies.push(await call({ op: "publish", room, data }));
      await new Promise((r) => setTimeout(r, holdMs));
      ws.close();
      return replies;
    },
    { wsUrl, room, token, publications, holdMs },
  );
}
