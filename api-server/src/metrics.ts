// metrics.ts — owns the in-process Prometheus metrics (counters and histograms, text format 0.0.4).

type Labels = Record<string, string>;

function labelText(labels: Labels): string {
  const parts = Object.entries(labels).map(([k, v]) => `${k}="${v.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n")}"`);
  return parts.length ? `{${parts.join(",")}}` : "";
}

class Counter {
  private readonly values = new Map<string, number>();
  constructor(
    readonly name: string,
    readonly help: string,
  ) {}
  inc(labels: Labels = {}, by = 1): void {
    const k = labelText(labels);
    this.values.set(k, (this.values.get(k) ?? 0) + by);
  }
  render(): string {
    const lines = [`# HELP ${this.name} ${this.help}`, `# TYPE ${this.name} counter`];
    if (this.values.size === 0) lines.push(`${this.name} 0`);
    for (const [k, v] of this.values) lines.push(`${this.name}${k} ${v}`);
    return lines.join("\n");
  }
}

class Histogram {
  private readonly counts: number[];
  private sum = 0;
  private count = 0;
  constructor(
    readonly name: string,
    readonly help: string,
    readonly buckets: number[],
  ) {
    this.counts = buckets.map(() => 0);
  }
  observe(v: number): void {
    this.sum += v;
    this.count += 1;
    this.buckets.forEach((b, i) => {
      if (v <= b) this.counts[i]! += 1;
    });
  }
  render(): string {
    const lines = [`# HELP ${this.name} ${this.help}`, `# TYPE ${this.name} histogram`];
    this.buckets.forEach((b, i) => lines.push(`${this.name}_bucket{le="${b}"} ${this.counts[i]}`));
    lines.push(`${this.name}_bucket{le="+Inf"} ${this.count}`, `${this.name}_sum ${this.sum}`, `${this.name}_count ${this.count}`);
    return lines.join("\n");
  }
}

const SECONDS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5];

/** All metrics of one server instance. */
export class Metrics {
  readonly httpRequests = new Counter("skytale_api_http_requests_total", "HTTP requests by route, method and status.");
  readonly httpDuration = new Histogram("skytale_api_http_request_duration_seconds", "HTTP request duration.", SECONDS);
  readonly tokensIssued = new Counter("skytale_api_tokens_issued_total", "Relay tokens issued.");
  readonly authFailures = new Counter("skytale_api_auth_failures_total", "Failed API key authentications by code.");
  readonly rateLimited = new Counter("skytale_api_rate_limited_total", "Requests refused with 429 by limiter.");
  readonly argon2Verify = new Histogram("skytale_api_argon2_verify_seconds", "Argon2id verification time.", SECONDS);
  readonly limitsFallbacks = new Counter("skytale_api_limits_fallbacks_total", "Limit checks answered from this instance's memory because the shared backend failed.");
  readonly keyCacheHits = new Counter("skytale_api_key_cache_hits_total", "API key checks answered from the verified-key cache.");
  readonly accountsCreated = new Counter("skytale_api_accounts_created_total", "Accounts created.");
  readonly credentialsIssued = new Counter("skytale_api_credentials_issued_total", "Agent credentials issued (registrations, renewals, rotations).");
  readonly agentsRegistered = new Counter("skytale_api_agents_registered_total", "New agent identities registered.");
  readonly agentsRotated = new Counter("skytale_api_agents_rotated_total", "Agent signature keys rotated by an admin.");
  readonly agentsRevoked = new Counter("skytale_api_agents_revoked_total", "Agent identities revoked.");

  /** Renders every metric in the Prometheus text exposition format. */
  render(extra: string[] = []): string {
    return (
      [
        this.httpRequests,
        this.httpDuration,
        this.tokensIssued,
        this.authFailures,
        this.rateLimited,
        this.argon2Verify,
        this.limitsFallbacks,
        this.keyCacheHits,
        this.accountsCreated,
        this.credentialsIssued,
        this.agentsRegistered,
        this.agentsRotated,
        this.agentsRevoked,
      ]
        .map((m) => m.render())
        .concat(extra)
        .join("\n") + "\n"
    );
  }
}
