// Test helper: wait for a condition (never a fixed sleep).

/** Polls `fn` until it returns a truthy value (returned) or throws after `timeoutMs`. */
export async function waitFor(fn, { timeoutMs = 30_000, intervalMs = 100, what = 'condition' } = {}) {
  const deadline = Date.now() + timeoutMs
  let last
  for (;;) {
    try {
      const v = await fn()
      if (v) return v
      last = v
    } catch (e) {
      last = e
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what} (last: ${last instanceof Error ? last.message : JSON.stringify(last)})`)
    await new Promise((r) => setTimeout(r, intervalMs))
  }
}
