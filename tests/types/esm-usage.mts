// Compile-only check of the ESM typings as users import them (package exports → lib/index.d.mts).
import { Agent, Client, SkytaleChannelManager, SkytaleError, AuthError, StateError, ERROR_CODES, type SkytaleErrorCode } from '@skytale/sdk'

const code: SkytaleErrorCode = 'SKYTALE_KEYSTORE_WRONG_KEY'
// @ts-expect-error not a code
const notACode: SkytaleErrorCode = 'SKYTALE_NOPE'
const category: 'auth' | 'keystore' | 'transport' | 'channel' | 'mls' | 'validation' | 'state' | 'internal' = ERROR_CODES[code]

export async function esmUsage(): Promise<string> {
  const agent = await Agent.open({ dataDir: '/tmp/x', identity: 'a', keystoreKey: new Uint8Array(32) })
  const client = await Client.connect({ agent, apiUrl: 'x', apiKey: 'y' })
  const mgr = new SkytaleChannelManager({ identity: 'x' })
  try {
    await mgr.send('a/b/c', 'hi')
  } catch (e) {
    if (e instanceof AuthError || e instanceof StateError) return e.code
    if (e instanceof SkytaleError && e.code === 'SKYTALE_RATE_LIMITED') return category
  }
  await client.close()
  return String(notACode)
}
