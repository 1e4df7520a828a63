// Compile-only check of the public typings (index.d.ts + lib/index.d.ts): `npm run test:types`.
import { Agent, Client, SkytaleChannelManager, ChannelError, type SkytaleMessage } from '../../lib/index'
async function main() {
  const agent = await Agent.open({ dataDir: '/tmp/x', identity: 'a', keystoreKey: new Uint8Array(32) })
  const c1 = await Client.connect({ agent, apiUrl: 'x', apiKey: 'y' })
  const c2 = await Client.connect(agent, { apiUrl: 'x', apiKey: 'y' })
  const ch = await c1.createChannel('a/b/c')
  for await (const m of ch.messages({ signal: AbortSignal.timeout(10) })) { m.seq.toFixed(); m.data?.byteLength }
  const mgr = new SkytaleChannelManager({ identity: 'x' })
  mgr.on('message', (m: SkytaleMessage) => m.text.length)
  const t: string = await mgr.invite('a/b/c', { maxUses: 1 })
  await mgr.joinWithToken('a/b/c', t, { timeoutMs: 5 })
  const texts: string[] = await mgr.receive('a/b/c')
  const e = new ChannelError('m', 'SKYTALE_X'); e.code.toLowerCase()
  await c2.close()
  return texts
}
main
