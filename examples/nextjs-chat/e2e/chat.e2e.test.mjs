// Browser end-to-end: a real plaza-edge, the example built and served by `next start`, and two
// headless Chromium pages (separate cookie jars = two users) chatting and seeing each other's
// presence. Screenshots go to $ARTIFACT_DIR (default: <repo>/target/test-artifacts). The attacks
// on the example (posing as someone else, malformed publications) are in attacks.e2e.test.mjs.
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import path from "node:path";
import { after, afterEach, before, test } from "node:test";
import { artifacts, closeContexts, memberNames, messageTexts, send, signIn as signInTo, startNext, startStack, stopStack, until } from "./harness.mjs";

let stack;
before(async () => {
  stack = await startStack();
});
afterEach(() => closeContexts(stack));
after(() => stopStack(stack));

const signIn = (name, url) => signInTo(stack, name, url);

test("two browser pages chat through the Next.js example, see each other's presence, typing and a live counter", async () => {
  const ann = await signIn("Ann");
  const bob = await signIn("Bob");

  await until("Ann sees Bob present", async () => (await memberNames(ann.page)).some((n) => n.startsWith("Bob")));
  await until("Bob sees Ann present", async () => (await memberNames(bob.page)).some((n) => n.startsWith("Ann")));
  assert.deepEqual((await memberNames(ann.page)).sort(), ["Ann (you)", "Bob"]);

  // "Bob is typing…": ephemeral signals (useTyping) through the typing room. A signal sent
  // before Bob's typing subscription is live is dropped (at most once), so keep typing.
  const typingLine = (page) => page.getByTestId("typing").innerText();
  let keys = 0;
  await until("Ann sees Bob typing", async () => {
    await bob.page.getByTestId("draft").fill(`hel${"l".repeat(keys++ % 5)}`);
    return (await typingLine(ann.page)).includes("Bob is typing");
  });
  assert.equal(await typingLine(bob.page), "", "Bob does not see himself typing");
  await bob.page.getByTestId("draft").fill("");
  await until("Bob's stop reaches Ann", async () => (await typingLine(ann.page)) === "");

  // The live counter (useRoomState, a compare-and-set per click): clicks on both pages, some
  // racing each other, all count, and both pages end on the same value.
  const counter = (page) => page.getByTestId("counter").innerText();
  await until("the counter is loaded", async () => /^\d+$/.test(await counter(ann.page)));
  const start = Number(await counter(ann.page));
  for (let i = 0; i < 3; i++) {
    await Promise.all([ann.page.getByTestId("increment").click(), bob.page.getByTestId("increment").click()]);
    await until("the clicks are done", async () =>
      (await ann.page.getByTestId("increment").isEnabled()) && (await bob.page.getByTestId("increment").isEnabled()));
  }
  await until("both pages show six more", async () =>
    Number(await counter(ann.page)) === start + 6 && Number(await counter(bob.page)) === start + 6);

  await send(ann, "hello Bob");
  await until("Bob receives Ann's message", async () => (await messageTexts(bob.page)).some((t) => t.includes("hello Bob")));
  await send(bob, "hi Ann, all good");
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
  // `next dev` renders in StrictMode: effects mount, unmount and mount again.
  const devUrl = await startNext(stack, "dev");
  const dan = await signIn("Dan", devUrl);
  await until("Dan sees himself present", async () => (await memberNames(dan.page)).includes("Dan (you)"), 60_000);
  await new Promise((r) => setTimeout(r, 500)); // any delayed close or second connect would show now
  assert.equal(dan.sockets.length, 1, `one WebSocket, got ${dan.sockets.length}`);
  const res = await fetch(`${stack.edgeHttp}/v1/api/rooms/chat:lobby/presence`, { headers: { Authorization: `Bearer ${stack.apiKey}` } });
  const { members } = await res.json();
  assert.deepEqual(members.filter((m) => m.user === "dan").length, 1, "one presence member for Dan");
  await send(dan, "strict hello");
  await until("Dan's message shows once", async () => (await messageTexts(dan.page)).filter((t) => t.includes("strict hello")).length === 1);
  await new Promise((r) => setTimeout(r, 300));
  assert.equal((await messageTexts(dan.page)).filter((t) => t.includes("strict hello")).length, 1);
  await dan.context.close();
});
