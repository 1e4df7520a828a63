// Type-level use of @skytale/langchain and @skytale/mcp (checked by tsc, never run).
import { SkytaleChannelManager } from '@skytale/sdk'
import { skytaleTools, TOOL_NAMES, readMessages, type SkytaleToolName } from '@skytale/langchain'
import { createSkytaleContext, serveHttp, serveStdio, channelUri } from '@skytale/mcp'

export async function usage(): Promise<void> {
  const manager = new SkytaleChannelManager({ identity: 'typed-agent' })
  const tools = skytaleTools(manager, { channels: ['acme/a/b'], readOnly: true })
  const names: string[] = tools.map((t) => t.name)
  const first: SkytaleToolName = TOOL_NAMES[0]
  const msgs = await readMessages(manager, 'acme/a/b', { timeoutMs: 10 })
  const texts: string[] = msgs.map((m) => `${m.sender}: ${m.text} #${m.seq}`)
  const ctx = createSkytaleContext(manager, { readOnly: false, historySize: 10 })
  const server = ctx.buildServer()
  const http = await serveHttp(ctx, { token: 't', port: 0 })
  const url: string = http.url
  await http.close()
  await serveStdio(ctx)
  void [names, first, texts, server, url, channelUri('acme/a/b')]
}
