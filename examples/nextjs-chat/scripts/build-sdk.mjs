// Builds the local SDK (../../sdk/js) this example depends on (file: link) when its build is
// missing or older than its sources, so `npm run dev` / `npm run build` work on a fresh clone.
import { execSync } from "node:child_process";
import { existsSync, readdirSync, statSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const sdk = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../../sdk/js");
const newest = (dir) =>
  Math.max(...readdirSync(dir).map((f) => statSync(path.join(dir, f)).mtimeMs));
const built = path.join(sdk, "dist/index.js");
const installed = existsSync(path.join(sdk, "node_modules/.package-lock.json"));
const fresh = existsSync(built) && statSync(built).mtimeMs >= newest(path.join(sdk, "src"));
if (!installed) {
  console.log("plaza sdk: npm ci in sdk/js");
  execSync("npm ci --no-audit --no-fund", { cwd: sdk, stdio: "inherit" });
}
if (!installed || !fresh) {
  console.log("plaza sdk: building sdk/js");
  execSync("npm run build", { cwd: sdk, stdio: "inherit" });
}
