// Test helper for the framework integrations: the real API server and relay, an account (org
// `acme`), and a Node agent `node-agent` (SkytaleChannelManager) in its own process.
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { randomBytes } from 'node:crypto'
import { MANAGER_WORKER, startAgentProcess } from '../../helpers/agent-process.mjs'
import { signup, startApiServer, startRelay } from '../../helpers/stack.mjs'

export async function startWorld(prefix) {
  const root = mkdtempSync(join(tmpdir(), `skytale-${prefix}-`))
  const world = { root, api: null, relay: null, apiKey: '', node: null }
  world.stop = async () => {
    await world.node?.kill()
    await world.relay?.kill()
    await world.api?.stop()
    rmSync(root, { recursive: true, force: true })
  }
  try {
    world.api = await startApiServer({ dataDir: join(root, 'api') })
    world.relay = await startRelay({ dataDir: join(root, 'relay'), jwksUrl: `${world.api.url}/.well-known/jwks.json` })
    world.apiKey = await signup(world.api.url, 'acme')
    /** SkytaleChannelManager options for a new agent with its own data dir and keystore key. */
    world.agentOptions = (identity) => ({
      identity, apiKey: world.apiKey, apiUrl: world.api.url, relay: world.relay.address,
      dataDir: join(root, 'agents', identity), keystoreKey: randomBytes(32).toString('hex'),
    })
    /** The same as SKYTALE_* environment variables. */
    world.agentEnv = (identity) => {
      const o = world.agentOptions(identity)
      return {
        SKYTALE_IDENTITY: o.identity, SKYTALE_API_KEY: o.apiKey, SKYTALE_API_URL: o.apiUrl,
        SKYTALE_RELAY: o.relay, SKYTALE_DATA_DIR: o.dataDir, SKYTALE_KEYSTORE_KEY: o.keystoreKey,
      }
    }
    world.node = startAgentProcess(MANAGER_WORKER)
    await world.node.call('start', world.agentOptions('node-agent'))
    return world
  } catch (e) {
    await world.stop()
    throw e
  }
}
