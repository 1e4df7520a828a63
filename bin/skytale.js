#!/usr/bin/env node
// skytale CLI (work in progress in this commit; see the next commits).
'use strict'
console.error('skytale: CLI under construction')
process.exit(1)
