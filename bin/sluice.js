#!/usr/bin/env node
// `sluice`, the platform's one binary (`npx sluice --help`). The sources are TypeScript, run
// through tsx's loader; `npm start` runs the same entry point with a tuned young generation.
import { register } from "tsx/esm/api"

register()
await import("../src/main.ts")
