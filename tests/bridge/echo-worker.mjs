// Benchmark helper: a SkytaleChannelManager that echoes every message of one channel back
// ("echo:" + text). Args: JSON on argv[2] with identity, apiKey, apiUrl, relay, dataDir,
// keystoreKey, channel, token. Prints "ready" once joined.
import { createRequire } from 'node:module'
const require = createRequire(import.meta.url)
const { SkytaleChannelManager } = require('../../lib/index.js')

const o = JSON.parse(process.argv[2])
const mgr = new SkytaleChannelManager(o)
await mgr.ready()
if (o.create) {
  await mgr.create(o.channel)
  console.log(JSON.stringify({ token: await mgr.invite(o.channel, { maxUses: 1, ttlSeconds: 3600 }) }))
}
mgr.on('message', (m) => {
  if (m.channel === o.channel && !m.text.startsWith('echo:')) mgr.send(o.channel, `echo:${m.text}`).catch(() => {})
})
console.log(JSON.stringify({ ready: true }))
process.stdin.on('end', async () => { await mgr.close(); process.exit(0) })
process.stdin.resume()
