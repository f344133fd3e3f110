/**
 * Builds the web console into `console/dist`, which the serving role serves at `/`
 * (`src/serving/Console.ts`). `npm install` runs it (the `prepare` script); `npm run build:console`
 * again after a change. Assets get content-hashed names under `assets/`, so the server can cache
 * them for a year and only `index.html` is fetched anew.
 */
import preact from "@preact/preset-vite"
import { defineConfig } from "vite"

export default defineConfig({
  root: import.meta.dirname,
  base: "/",
  plugins: [preact()],
  build: {
    outDir: "dist",
    emptyOutDir: true,
    // Evergreen browsers only: the console is an operator's tool, not a public site.
    target: "es2022",
    assetsInlineLimit: 0,
    reportCompressedSize: false,
  },
  // `npm run dev:console` proxies the API to a running platform (`npm start`).
  server: {
    host: "127.0.0.1",
    proxy: { "/v1": { target: "http://127.0.0.1:8080", ws: true } },
  },
})
