import assert from "node:assert/strict";
import { test } from "node:test";
import { diffUsers, groupMembersByUser } from "../../dist/index.js";

const m = (client, user, info = null) => ({ client, user, info });

test("members group into one entry per user with a connection count", () => {
  const users = groupMembersByUser([m("c3", "bob"), m("c1", "ann", { n: 1 }), m("c2", "ann", { n: 2 })]);
  assert.deepEqual(users, [
    { user: "ann", connections: 2, info: { n: 1 }, clients: ["c1", "c2"] },
    { user: "bob", connections: 1, info: null, clients: ["c3"] },
  ]);
});

test("a user joins with the first connection and leaves with the last", () => {
  const one = groupMembersByUser([m("c1", "ann")]);
  const two = groupMembersByUser([m("c1", "ann"), m("c2", "ann"), m("c3", "bob")]);
  assert.deepEqual(diffUsers(one, two), { joined: ["bob"], left: [] });
  const tabClosed = groupMembersByUser([m("c2", "ann"), m("c3", "bob")]);
  assert.deepEqual(diffUsers(two, tabClosed), { joined: [], left: [] }, "another tab remains");
  assert.deepEqual(diffUsers(tabClosed, groupMembersByUser([m("c3", "bob")])), { joined: [], left: ["ann"] });
});
