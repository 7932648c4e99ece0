import assert from "node:assert/strict";
import { effect, type ReadonlySignal } from "@preact/signals-core";
import { connectKube } from "./kubernetes.ts";
import { startFakeKube } from "../sim/kube.ts";
import { LEADER_URL_ANNOTATION, LeaderElector } from "./leader.ts";

function becomes(value: ReadonlySignal<boolean>, wanted: boolean): Promise<void> {
  const reached = Promise.withResolvers<void>();
  const dispose = effect(() => {
    if (value.value === wanted) reached.resolve();
  });
  return reached.promise.finally(dispose);
}

// Found by test/cluster_test.ts: after an API server restart the replica still named in
// the Lease passed first requests to the replica that had held the Lease before it.
Deno.test("a replica that holds the Lease but cannot renew it names no other leader", async () => {
  await using kube = await startFakeKube();
  // Released by a replica that has gone: its URL stays on the Lease.
  kube.apply("leases", {
    apiVersion: "coordination.k8s.io/v1",
    kind: "Lease",
    metadata: {
      name: "rkllama-router",
      namespace: "default",
      annotations: { [LEADER_URL_ANNOTATION]: "http://127.0.0.9:8080" },
    },
    spec: { leaseDurationSeconds: 1, leaseTransitions: 3 },
  });
  const elector = new LeaderElector(connectKube(kube.url, () => undefined, () => false), {
    namespace: "default",
    name: "rkllama-router",
    identity: "b",
    renewDeadlineMs: 200,
    retryPeriodMs: 20,
    advertiseUrl: "http://127.0.0.2:8080",
  });
  elector.start();
  try {
    await becomes(elector.leading, true);
    const lease = kube.get("leases", "default", "rkllama-router")!;
    assert.equal(lease.metadata?.annotations?.[LEADER_URL_ANNOTATION], "http://127.0.0.2:8080");
    await kube.outage("refused");
    await becomes(elector.leading, false);
    assert.equal(elector.status.holder, "b");
    assert.equal(elector.leaderUrl, "");
  } finally {
    await elector.stop();
  }
});
