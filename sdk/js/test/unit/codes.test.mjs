import assert from "node:assert/strict";
import { test } from "node:test";
import { CloseCode, ErrorCode, PlazaError, closeNeedsFreshToken, isTemporaryCode, isTerminalCloseCode } from "../../dist/index.js";

test("4000–4499 and non-Plaza codes reconnect; 4500–4999 are terminal", () => {
  for (const code of [4000, 4001, 4002, 4003, 4004, 4005, 4006, 4007, 4008, 4009, 4499, 1000, 1001, 1006, 1011, 3000]) {
    assert.equal(isTerminalCloseCode(code), false, `${code} reconnects`);
  }
  for (const code of [4500, 4501, 4502, 4503, 4504, 4999]) {
    assert.equal(isTerminalCloseCode(code), true, `${code} is terminal`);
  }
  assert.equal(isTerminalCloseCode(CloseCode.invalidToken), true);
});

test("only 4002 asks for a fresh token", () => {
  assert.equal(closeNeedsFreshToken(4002), true);
  for (const code of [4000, 4001, 4004, 4500, 1006]) assert.equal(closeNeedsFreshToken(code), false);
});

test("100, 112 and 113 are the temporary error codes", () => {
  const temporary = Object.values(ErrorCode).filter(isTemporaryCode).sort();
  assert.deepEqual(temporary, [100, 112, 113]);
});

test("PlazaError carries code, temporary flag and op", () => {
  const e = new PlazaError(113, "broker down", undefined, "publish");
  assert.equal(e.code, 113);
  assert.equal(e.temporary, true);
  assert.equal(e.op, "publish");
  assert.ok(e instanceof Error);
  assert.equal(new PlazaError(106, "no").temporary, false);
});
