// A scripted in-memory WebSocket for unit tests of the client's logic (no network). The
// integration tests use the real edge; this one lets a test decide every server frame.
export class FakeSocket {
  static instances = [];
  static reset() {
    FakeSocket.instances = [];
  }
  static get last() {
    return FakeSocket.instances[FakeSocket.instances.length - 1];
  }

  constructor(url, protocols) {
    this.url = url;
    this.protocols = protocols;
    this.readyState = 0;
    this.sent = [];
    this.closedByClient = false;
    this.onopen = this.onmessage = this.onclose = this.onerror = null;
    FakeSocket.instances.push(this);
  }
  send(text) {
    this.sent.push(JSON.parse(text));
  }
  close() {
    this.closedByClient = true;
    this.readyState = 3;
  }
  // ── server side ──
  open() {
    this.readyState = 1;
    this.onopen?.({});
  }
  push(frame) {
    this.onmessage?.({ data: JSON.stringify(frame) });
  }
  reply(command, ok) {
    this.push({ id: command.id, ok });
  }
  fail(command, code, message = "refused", temporary = false) {
    this.push({ id: command.id, error: { code, message, temporary } });
  }
  drop(code = 1006, reason = "") {
    this.readyState = 3;
    this.onclose?.({ code, reason });
  }
  /** Commands sent with `op` (all, or those not yet answered by the test are up to it). */
  ops(op) {
    return this.sent.filter((f) => f.op === op);
  }
  /** Opens and answers `connect`; resolves once the client processed the reply. */
  async accept({ expiresIn = 3600, client = `c${FakeSocket.instances.length}`, pingInterval = 25 } = {}) {
    this.open();
    const c = this.ops("connect").at(-1);
    this.reply(c, { client, user: "ann", expires_in: expiresIn, ping_interval: pingInterval });
    await flush();
  }
}

/** Lets pending promise callbacks and microtasks run. */
export const flush = () => new Promise((r) => setTimeout(r, 0));
