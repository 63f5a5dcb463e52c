// The React bindings during server rendering: nothing may connect, subscribe or fetch a token.
import assert from "node:assert/strict";
import { test } from "node:test";
import { createElement as h, StrictMode } from "react";
import { renderToString } from "react-dom/server";
import { PlazaClient } from "../../dist/index.js";
import { PlazaProvider, useConnectionState, usePlaza, usePresence, useRoom, useTyping } from "../../dist/react.js";

function Probe() {
  const state = useConnectionState();
  const { state: roomState } = useRoom("chat:ssr", () => {});
  const { members, ready } = usePresence("chat:ssr");
  const { typing } = useTyping("typing:ssr");
  return h("p", null, `${state}/${roomState}/${members.length}/${ready}/${typing.length}`);
}

test("server rendering opens no connection and asks for no token", () => {
  let sockets = 0;
  let tokens = 0;
  class CountingSocket {
    constructor() {
      sockets += 1;
    }
  }
  const html = renderToString(
    h(
      StrictMode,
      null,
      h(PlazaProvider, { url: "ws://edge.test/v1/ws", getToken: () => (tokens++, "t"), WebSocket: CountingSocket }, h(Probe)),
    ),
  );
  assert.match(html, /disconnected\/subscribing\/0\/false\/0/);
  assert.equal(sockets, 0);
  assert.equal(tokens, 0);
});

test("a provider given a client shares it and leaves it unconnected until mounted", () => {
  const client = new PlazaClient({ url: "ws://edge.test/v1/ws", getToken: () => "t", WebSocket: class {} });
  let seen;
  function Grab() {
    seen = usePlaza();
    return null;
  }
  renderToString(h(PlazaProvider, { client }, h(Grab)));
  assert.equal(seen, client);
  assert.equal(client.state, "disconnected");
  assert.equal(client.refCount("chat:ssr"), 0);
});

test("hooks outside a provider fail with a clear message", () => {
  assert.throws(() => renderToString(h(Probe)), /wrap your components in <PlazaProvider>/);
});
