// Browser end-to-end tests of the attacks on the example (hardening issue, finding 10): a user
// posing as someone else, and publications or presence infos whose shape the UI does not
// expect. Real plaza-edge, `next start`, headless Chromium; the attacker speaks the protocol by
// hand from a browser WebSocket, mints tokens with the edge's secret or uses the server API.
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import path from "node:path";
import { after, afterEach, before, test } from "node:test";
import { ROOM, apiPublish, artifacts, closeContexts, historyLoaded, memberNames, messageTexts, mintToken, rawClient, send, signIn, startStack, stopStack, until } from "./harness.mjs";

/** What the app caps a rendered message at (app/message.ts), plus room for the name. */
const MAX_TEXT = 2000;
const MAX_NAME = 40;

let stack;
before(async () => {
  stack = await startStack();
});
afterEach(() => closeContexts(stack));
after(() => stopStack(stack));

/** A token for `sub` that does grant `publish` on the chat rooms (as this example's once did). */
const publishingToken = (sub, info = { name: sub }) =>
  mintToken(stack, sub, { rooms: { "chat:*": ["subscribe", "publish", "presence"] }, info });

const noErrors = (user, who) => assert.deepEqual(user.errors.map(String), [], `no errors in ${who}'s page`);

test("a client posting {user: 'ann', name: 'Ann'} over its own WebSocket is refused and never shown as Ann; its messages show under its own name", async () => {
  const ann = await signIn(stack, "Ann");
  const bob = await signIn(stack, "Bob");
  const mallory = await signIn(stack, "Mallory");

  // Mallory takes the token the app gives her and publishes to the room directly.
  const spoof = { text: "Ann here: send the invoice to my new account", user: "ann", name: "Ann", at: Date.now() };
  const [connected, subscribed, published] = await rawClient(mallory.page, { wsUrl: stack.edgeWs, publications: [spoof] });
  assert.ok(connected.ok && subscribed.ok, `the app's token lets Mallory read the room: ${JSON.stringify([connected, subscribed])}`);

  // What the app lets her send goes through its server action: shown as Mallory.
  await send(mallory, "hi, Mallory here");
  await until("Bob receives Mallory's message", async () => (await messageTexts(bob.page)).some((t) => t.includes("Mallory here")));
  for (const [viewer, who] of [[bob, "Bob"], [ann, "Ann"]]) {
    const shown = await messageTexts(viewer.page);
    assert.ok(!shown.some((t) => t.includes(spoof.text)), `${who} was shown Mallory's spoofed message: ${JSON.stringify(shown)}`);
    assert.deepEqual(shown, ["Mallory hi, Mallory here"], `${who} sees Mallory's message under her name`);
  }
  assert.equal(published.error?.code, 106, `the app's token must not grant publish: ${JSON.stringify(published)}`);

  noErrors(bob, "Bob");
  await Promise.all([ann.context.close(), bob.context.close(), mallory.context.close()]);
});

test("a publication from a client whose token does grant publish is not shown as the user its data names", async () => {
  const ann = await signIn(stack, "Ann");
  const bob = await signIn(stack, "Bob");
  // Counted once the earlier tests' messages are in: they arrive after "connected".
  await historyLoaded(bob.page);
  const before = (await messageTexts(bob.page)).length;

  // A token granting publish (a misconfigured provider claim, an old token, the edge's --dev
  // /dev/token): the edge accepts the publication, the UI must still not believe its `data`.
  const spoof = { text: "Ann: ignore my last message, pay Mallory", user: "ann", name: "Ann", at: Date.now() };
  const replies = await rawClient(bob.page, { wsUrl: stack.edgeWs, token: publishingToken("mallory"), publications: [spoof] });
  assert.ok(replies[2].ok, `the edge accepts it (this token grants publish): ${JSON.stringify(replies[2])}`);

  await send(ann, "this is really Ann");
  await until("Bob receives Ann's message", async () => (await messageTexts(bob.page)).some((t) => t.includes("really Ann")));
  const shown = await messageTexts(bob.page);
  assert.ok(!shown.some((t) => t.includes(spoof.text)), `Bob was shown a client's publication as Ann's: ${JSON.stringify(shown)}`);
  assert.deepEqual(shown.slice(before), ["Ann this is really Ann"]);

  noErrors(bob, "Bob");
  await Promise.all([ann.context.close(), bob.context.close()]);
});

test("members whose token carries a malformed presence info (an object as name, no name, a huge name) do not break the member list", async () => {
  const bob = await signIn(stack, "Bob");
  const infos = [{ name: { first: "Eve" } }, "just a string", { name: "E".repeat(5_000) }];
  // Three connections that stay subscribed (present) until the assertions are done.
  const holds = infos.map((info, i) =>
    rawClient(bob.page, { wsUrl: stack.edgeWs, token: mintToken(stack, `eve-${i}`, { rooms: { "chat:*": ["subscribe", "presence"] }, info }), holdMs: 4_000 }),
  );
  await until("Bob sees the three members", async () => (await memberNames(bob.page)).length === 4, 15_000, bob);
  noErrors(bob, "Bob");
  const names = await memberNames(bob.page);
  assert.ok(names.includes("Bob (you)"), JSON.stringify(names));
  assert.ok(names.includes("eve-0") && names.includes("eve-1"), `members without a usable name show their user id: ${JSON.stringify(names)}`);
  assert.deepEqual(names.filter((n) => n.length > MAX_NAME + 1), [], "member names are capped");
  for (const replies of await Promise.all(holds)) assert.ok(replies.every((r) => r.ok), JSON.stringify(replies));
  await until("the members' leave reaches Bob", async () => (await memberNames(bob.page)).join() === "Bob (you)");
  noErrors(bob, "Bob");
  await bob.context.close();
});

test("malformed publications (data null, a number, an array, wrong or missing fields, huge strings, HTML) do not break the page for another viewer, who still sees later valid messages", async () => {
  const ann = await signIn(stack, "Ann");
  const bob = await signIn(stack, "Bob");

  // Over a raw WebSocket with a token that grants publish…
  const raw = await rawClient(ann.page, { wsUrl: stack.edgeWs, token: publishingToken("mallory"), publications: [null, { text: { evil: 1 } }] });
  assert.ok(raw.every((r) => r.ok), `raw publications accepted by the edge: ${JSON.stringify(raw)}`);
  // …and through the server API (any holder of an API key, a buggy job).
  const malformed = [
    null,
    42,
    "a bare string",
    true,
    [1, 2, 3],
    {},
    { text: null, user: "ann", name: "Ann" },
    { text: { nested: "object" }, user: "ann", name: "Ann" },
    { text: ["an", "array"], user: "ann", name: "Ann" },
    { text: "name is an object", user: "ann", name: { first: "Ann" } },
    { text: "user is a number", user: 7, name: "Ann" },
    { text: "no user or name" },
  ];
  for (const data of malformed) await apiPublish(stack, ROOM, data);
  const huge = { text: "A".repeat(50_000), user: "zed", name: "Z".repeat(10_000), at: Date.now() };
  const html = { text: `<img src=x onerror="window.__pwned = 1"><script>window.__pwned = 2</script>`, user: "zed", name: "<b>Zed</b>", at: Date.now() };
  await apiPublish(stack, ROOM, huge);
  await apiPublish(stack, ROOM, html);

  // The HTML one comes last and is well-formed: once Bob is shown it, he has been sent the rest.
  const htmlShown = `${html.name} ${html.text}`;
  await until("Bob is shown the HTML message, as text", async () => (await messageTexts(bob.page)).includes(htmlShown), 15_000, bob, ann);
  await send(ann, "still here after the junk");
  await until("Bob receives Ann's later message", async () => (await messageTexts(bob.page)).some((t) => t.includes("still here after the junk")), 15_000, bob);
  noErrors(bob, "Bob");
  assert.equal(await bob.page.getByTestId("connection").innerText(), "connected");

  const shown = await messageTexts(bob.page);
  const tooLong = shown.filter((t) => t.length > MAX_NAME + 1 + MAX_TEXT + 2);
  assert.deepEqual(tooLong.map((t) => t.length), [], "every rendered message is capped");
  assert.ok(shown.some((t) => t.startsWith("ZZZZ") && t.includes("AAAA")), "the oversized (but well-formed) message is shown, capped");
  assert.equal(await bob.page.evaluate(() => window.__pwned), undefined, "no markup from a message ran");
  for (const t of shown) assert.doesNotMatch(t, /nested|\[object Object\]|name is an object|user is a number|no user or name/);
  mkdirSync(artifacts, { recursive: true });
  await bob.page.screenshot({ path: path.join(artifacts, "nextjs-chat-after-malformed.png"), fullPage: true });

  // A viewer arriving later loads the same junk from the history.
  const cat = await signIn(stack, "Cat");
  await until("Cat loads Ann's message from the history", async () => (await messageTexts(cat.page)).some((t) => t.includes("still here after the junk")), 15_000, cat);
  noErrors(cat, "Cat");
  await send(ann, "and one more");
  await until("Cat receives live messages", async () => (await messageTexts(cat.page)).some((t) => t.includes("and one more")), 15_000, cat);
  noErrors(cat, "Cat");
  noErrors(ann, "Ann");
  await Promise.all([ann.context.close(), bob.context.close(), cat.context.close()]);
});
