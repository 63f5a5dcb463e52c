// Browser end-to-end: a real plaza-edge, the example built and served by `next start`, and two
// headless Chromium pages (separate cookie jars = two users) chatting and seeing each other's
// presence. Screenshots go to $ARTIFACT_DIR (default: <repo>/target/test-artifacts).
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync } from "node:fs";
import { createServer } from "node:net";
import path from "node:path";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const here = path.dirname(fileURLToPath(import.meta.url));
const app = path.resolve(here, "..");
const repo = path.resolve(app, "../..");
const edgeBin = path.resolve(process.env.PLAZA_EDGE_BIN ?? path.join(repo, "target/debug/plaza-edge"));
const chromiumPath = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
const artifacts = path.resolve(process.env.ARTIFACT_DIR ?? path.join(repo, "target/test-artifacts"));

const children = [];
process.on("exit", () => children.forEach((c) => c.kill("SIGKILL")));
// Interrupted runs still stop the edge and Next.js (the exit hook above runs on process.exit).
for (const signal of ["SIGINT", "SIGTERM"]) process.once(signal, () => process.exit(130));

function freePort() {
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
function run(cmd, args, { env, cwd, ready, what }) {
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

let browser;
let appUrl;
let appEnv;
let edgeHttp;
let edgeApiKey;

before(async () => {
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
    env: { PLAZA_AUTH__HMAC_SECRET: secret, PLAZA_API__KEYS: JSON.stringify([apiKey]), PLAZA_LOG: "warn" },
    ready: /websocket:\s+ws:\/\/([^/\s]+)\/v1\/ws/,
    what: "plaza-edge",
  });
  const edgeHost = edge.match[1];
  const port = await freePort();
  edgeHttp = `http://${edgeHost}`;
  edgeApiKey = apiKey;
  appEnv = { PLAZA_URL: edgeHttp, PLAZA_SECRET: secret, PLAZA_API_KEY: apiKey, NEXT_TELEMETRY_DISABLED: "1" };
  await run(process.execPath, [path.join(app, "node_modules/next/dist/bin/next"), "start", "-p", String(port), "-H", "127.0.0.1"], {
    cwd: app,
    env: appEnv,
    ready: /Ready in|✓ Ready/,
    what: "next start",
  });
  appUrl = `http://127.0.0.1:${port}`;
  browser = await chromium.launch({
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
});

after(async () => {
  await browser?.close();
  for (const c of children) c.kill("SIGTERM");
});

async function signIn(name, url = appUrl) {
  const context = await browser.newContext({ viewport: { width: 960, height: 640 } });
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
  return { page, context, errors, sockets };
}

const memberNames = (page) => page.getByTestId("member").allInnerTexts();
const messageTexts = (page) => page.getByTestId("message").allInnerTexts();

async function until(what, fn, timeoutMs = 15_000) {
  const start = Date.now();
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() - start > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

test("two browser pages chat through the Next.js example and see each other's presence", async () => {
  const ann = await signIn("Ann");
  const bob = await signIn("Bob");

  await until("Ann sees Bob present", async () => (await memberNames(ann.page)).some((n) => n.startsWith("Bob")));
  await until("Bob sees Ann present", async () => (await memberNames(bob.page)).some((n) => n.startsWith("Ann")));
  assert.deepEqual((await memberNames(ann.page)).sort(), ["Ann (you)", "Bob"]);

  await ann.page.getByTestId("draft").fill("hello Bob");
  await ann.page.getByTestId("send").click();
  await until("Bob receives Ann's message", async () => (await messageTexts(bob.page)).some((t) => t.includes("hello Bob")));
  await bob.page.getByTestId("draft").fill("hi Ann, all good");
  await bob.page.getByTestId("send").click();
  await until("Ann receives Bob's reply", async () => (await messageTexts(ann.page)).some((t) => t.includes("hi Ann, all good")));

  const annMessages = await messageTexts(ann.page);
  assert.deepEqual(annMessages, ["Ann hello Bob", "Bob hi Ann, all good"], "in order, each once");
  assert.deepEqual(await messageTexts(bob.page), annMessages);

  mkdirSync(artifacts, { recursive: true });
  await ann.page.screenshot({ path: path.join(artifacts, "nextjs-chat-ann.png"), fullPage: true });
  await bob.page.screenshot({ path: path.join(artifacts, "nextjs-chat-bob.png"), fullPage: true });

  // A third tab joins late: it loads the history (recovered: false on first subscribe).
  const cat = await signIn("Cat");
  await until("Cat sees the earlier messages", async () => (await messageTexts(cat.page)).length === 2);
  await cat.context.close();
  await until("Cat's leave reaches Ann", async () => !(await memberNames(ann.page)).includes("Cat"));

  await bob.context.close();
  await until("Bob's leave reaches Ann", async () => (await memberNames(ann.page)).join() === "Ann (you)");
  assert.deepEqual(ann.errors.map(String), [], "no errors in Ann's page");
  await ann.context.close();
});

test("under React StrictMode (next dev) a page opens one connection and one subscription", async () => {
  const port = await freePort();
  // `next dev` renders in StrictMode: effects mount, unmount and mount again.
  await run(process.execPath, [path.join(app, "node_modules/next/dist/bin/next"), "dev", "-p", String(port), "-H", "127.0.0.1"], {
    cwd: app,
    env: appEnv,
    ready: /Ready in|✓ Ready/,
    what: "next dev",
  });
  const dan = await signIn("Dan", `http://127.0.0.1:${port}`);
  await until("Dan sees himself present", async () => (await memberNames(dan.page)).includes("Dan (you)"), 60_000);
  await new Promise((r) => setTimeout(r, 500)); // any delayed close or second connect would show now
  assert.equal(dan.sockets.length, 1, `one WebSocket, got ${dan.sockets.length}`);
  const res = await fetch(`${edgeHttp}/v1/api/rooms/chat:lobby/presence`, { headers: { Authorization: `Bearer ${edgeApiKey}` } });
  const { members } = await res.json();
  assert.deepEqual(members.filter((m) => m.user === "dan").length, 1, "one presence member for Dan");
  await dan.page.getByTestId("draft").fill("strict hello");
  await dan.page.getByTestId("send").click();
  await until("Dan's message shows once", async () => (await messageTexts(dan.page)).filter((t) => t.includes("strict hello")).length === 1);
  await new Promise((r) => setTimeout(r, 300));
  assert.equal((await messageTexts(dan.page)).filter((t) => t.includes("strict hello")).length, 1);
  await dan.context.close();
});
