#!/usr/bin/env node
// `skytale-api` (npm bin of @skytale/api-server): runs the server from its environment, as
// `node dist/main.js` does (`skytale-api rotate-signing-key` rotates the signing key).
import '../dist/main.js'
