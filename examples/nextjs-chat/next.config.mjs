import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));

/** @type {import('next').NextConfig} */
const nextConfig = {
  // @plaza/client is linked from ../../sdk/js: let the bundler see files outside this folder.
  turbopack: { root: path.resolve(here, "../..") },
  outputFileTracingRoot: path.resolve(here, "../.."),
};

export default nextConfig;
