// The Node side of examples/python/agent.py: creates the channel, prints an invite token for
// the SLIM agent's Skytale identity, and talks to it.
//   SKYTALE_API_KEY=sk_live_… node examples/python/node_peer.mjs acme/research/general
import { createRequire } from 'node:module'
const require = createRequire(import.meta.url)
const { SkytaleChannelManager } = require('../../lib/index.js')

const channel = process.argv[2] ?? 'acme/research/general'
const mgr = new SkytaleChannelManager({
  identity: 'node-agent',
  apiKey: process.env.SKYTALE_API_KEY,
  apiUrl: process.env.SKYTALE_API_URL ?? 'http://127.0.0.1:8080',
  dataDir: '.skytale/node-agent',
  keystoreKey: process.env.SKYTALE_KEYSTORE_KEY,
})
await mgr.ready()
if (!(await mgr.channels()).includes(channel)) await mgr.create(channel)
console.log('invite for the SLIM agent:', await mgr.invite(channel, { maxUses: 1, ttlSeconds: 3600 }))
mgr.on('message', (m) => console.log(`[${m.seq}] ${m.sender}: ${m.text}`))
setInterval(() => mgr.send(channel, `ping ${new Date().toISOString()}`), 5000)
