/**
 * @module
 * The one backoff of the router: the ejection of a pod that fails requests
 * (cluster/store.ts), the retry of a failed load or unload (placement/apply.ts) and
 * the reconnect of a Kubernetes list-watch (kube/list_watch.ts) all wait this long.
 */

/**
 * The wait before try `attempt` + 1 after `attempt` failures in a row: `baseMs`
 * doubled `attempt` times, at most `maxMs`. Attempt 0 waits `baseMs` (or `maxMs` if
 * smaller).
 *
 * @example
 * ```ts
 * backoffMs(0, 250, 10_000); // 250
 * backoffMs(3, 250, 10_000); // 2000
 * backoffMs(9, 250, 10_000); // 10000
 * ```
 */
export function backoffMs(attempt: number, baseMs: number, maxMs: number): number {
  // Past 2 ** 1023 a double is Infinity, and 0 * Infinity is NaN.
  return Math.min(baseMs * 2 ** Math.min(Math.max(0, attempt), 1023), maxMs);
}
