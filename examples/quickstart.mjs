// Quickstart: two agents, one end-to-end encrypted channel, no network.
// Run: npm ci && npm run build && node examples/quickstart.mjs
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { randomBytes } from 'node:crypto'
import { createRequire } from 'node:module'

const { Agent } = createRequire(import.meta.url)('../index.js')
const root = mkdtempSync(join(tmpdir(), 'skytale-quickstart-'))
const keystoreKey = new Uint8Array(randomBytes(32)) // keep it in your secret manager

const alice = await Agent.open({ dataDir: join(root, 'alice'), identity: 'alice', keystoreKey })
const bob = await Agent.open({ dataDir: join(root, 'bob'), identity: 'bob', passphrase: 'correct horse' })

const [kp] = await bob.generateKeyPackages(1) // single-use
const ch = await alice.createChannel('acme/research/summarizer')
const { commit, welcome } = await ch.addMembers([kp])
const bobCh = await bob.joinChannel(welcome)
console.log(`alice created ${ch.name}, bob joined at epoch ${bobCh.epoch} (commit ${commit.length} B)`)

const wire = await ch.encrypt(new TextEncoder().encode('hi bob'))
const ev = await bobCh.processIncoming(wire)
console.log(`bob got ${ev.kind} from ${ev.sender}: "${new TextDecoder().decode(ev.data)}" (${wire.length} B on the wire)`)

const reply = await bobCh.encrypt(new TextEncoder().encode('hi alice'))
console.log(`alice got: "${new TextDecoder().decode((await ch.processIncoming(reply)).data)}"`)

const rotation = await ch.rotateKey()
await bobCh.processIncoming(rotation.commit)
console.log(`after key rotation both are at epoch ${ch.epoch}/${bobCh.epoch}; members: ${(await ch.members()).join(', ')}`)

alice.close()
const again = await Agent.open({ dataDir: join(root, 'alice'), identity: 'alice', keystoreKey })
console.log(`reopened alice: channel ${again.channel('acme/research/summarizer').name} at epoch ${again.channel('acme/research/summarizer').epoch}`)
again.close(); bob.close()
rmSync(root, { recursive: true, force: true })
