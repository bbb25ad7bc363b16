// js-waku (@waku/sdk) as a light client of Roost nodes, driven by tests/tests/it/interop.rs.
//
//   node interop.mjs <scenario> '<json arguments>'
//
// Every scenario but dns-discovery connects with nothing but the Roost node's multiaddr (no
// default bootstrap, no DNS discovery); dns-discovery is given nothing but an enrtree:// URL and
// the name server serving it. Each does its part as a Waku light client would, and prints JSON
// lines on stdout:
// {"event":"ready"} when it is waiting for the Rust side, then {"event":"result", ...} once.
// Diagnostics go to stderr. Hashes are computed with @waku/message-hash.

import { Resolver } from "node:dns/promises";
import { createLightNode, Protocols, utf8ToBytes, bytesToUtf8 } from "@waku/sdk";
import { messageHash, messageHashStr } from "@waku/message-hash";
import { hashOf, nodesOfTree, storePagesBothWays } from "./common.mjs";

const [scenario, rawArgs] = process.argv.slice(2);
const args = JSON.parse(rawArgs ?? "{}");
const TIMEOUT_MS = args.timeoutMs ?? 60_000;

function emit(event, fields = {}) {
  process.stdout.write(JSON.stringify({ event, ...fields }) + "\n");
}

function log(...parts) {
  console.error(`[js-waku ${scenario}]`, ...parts);
}

async function start(extra = {}) {
  const node = await createLightNode({
    defaultBootstrap: false,
    bootstrapPeers: [args.peer],
    networkConfig: { clusterId: args.clusterId ?? 1, numShardsInCluster: args.numShards ?? 8 },
    discovery: { dns: false, peerExchange: false, peerCache: false, ...(extra.discovery ?? {}) },
    // Plain ws on loopback needs filterMultiaddrs: false; the wss scenario keeps js-waku's
    // default (dial wss only).
    libp2p: {
      hideWebSocketInfo: true,
      ...(args.plainWs === false ? {} : { filterMultiaddrs: false }),
    },
    ...extra.node,
  });
  await node.start();
  return node;
}


async function withDeadline(promise, what) {
  let timer;
  const deadline = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} timed out after ${TIMEOUT_MS} ms`)), TIMEOUT_MS);
  });
  try {
    return await Promise.race([promise, deadline]);
  } finally {
    clearTimeout(timer);
  }
}

/// Light push `count` messages over v3 and `legacyCount` over legacy, then read them back from
/// the store.
async function pushAndStore(node) {
  await withDeadline(node.waitForPeers([Protocols.LightPush, Protocols.Store]), "peers");
  const encoder = node.createEncoder({ contentTopic: args.contentTopic });
  const decoder = node.createDecoder({ contentTopic: args.contentTopic });
  const pushed = [];
  const failures = [];
  const base = Date.now();
  const plan = [
    ...Array.from({ length: args.count }, (_, i) => ({ legacy: false, i })),
    ...Array.from({ length: args.legacyCount ?? 0 }, (_, i) => ({ legacy: true, i })),
  ];
  for (const [n, { legacy, i }] of plan.entries()) {
    const message = {
      payload: utf8ToBytes(`js-waku ${legacy ? "legacy" : "v3"} ${i}`),
      timestamp: new Date(base + n),
    };
    const proto = await encoder.toProtoObj(message);
    const hash = messageHashStr(encoder.pubsubTopic, proto);
    const result = await node.lightPush.send(encoder, message, { autoRetry: false, useLegacy: legacy });
    if (result.successes.length > 0) {
      pushed.push(hash);
    } else {
      failures.push({ hash, legacy, errors: result.failures.map((f) => String(f.error)) });
    }
  }
  const stored = [];
  for await (const page of node.store.queryGenerator([decoder], {
    paginationForward: true,
    paginationLimit: 100,
  })) {
    for (const message of await Promise.all(page)) {
      if (message) stored.push(hashOf(message));
    }
  }
  emit("result", { pubsubTopic: encoder.pubsubTopic, pushed, failures, stored });
}

/// Light push `count` messages, then check they were stored the way apps and reliability
/// layers do: `store.queryGenerator([decoder], { messageHashes })` with js-waku's defaults
/// (it sends the decoder's pubsub topic along), once with data and once without
/// (`includeData: false`, a presence check). One hash nobody pushed is asked for too.
async function hashLookup(node) {
  await withDeadline(node.waitForPeers([Protocols.LightPush, Protocols.Store]), "peers");
  const encoder = node.createEncoder({ contentTopic: args.contentTopic });
  const decoder = node.createDecoder({ contentTopic: args.contentTopic });
  const pushed = [];
  const hashes = [];
  const base = Date.now();
  for (let i = 0; i < args.count; i++) {
    const message = { payload: utf8ToBytes(`lookup ${i}`), timestamp: new Date(base + i) };
    const proto = await encoder.toProtoObj(message);
    const result = await node.lightPush.send(encoder, message);
    if (result.successes.length === 0) {
      throw new Error(`push ${i} failed: ${result.failures.map((f) => String(f.error))}`);
    }
    pushed.push(messageHashStr(encoder.pubsubTopic, proto));
    hashes.push(messageHash(encoder.pubsubTopic, proto));
  }
  const unknown = new Uint8Array(32).fill(0xab);
  const messageHashes = [...hashes, unknown];
  const found = [];
  for await (const page of node.store.queryGenerator([decoder], { messageHashes })) {
    for (const message of await Promise.all(page)) {
      if (message) found.push(hashOf(message));
    }
  }
  let present = 0;
  for await (const page of node.store.queryGenerator([decoder], {
    messageHashes,
    includeData: false,
  })) {
    present += page.length;
  }
  emit("result", { pubsubTopic: encoder.pubsubTopic, pushed, found, present });
}

/// Subscribe through filter and report the first `count` messages pushed.
async function filterSubscribe(node) {
  await withDeadline(node.waitForPeers([Protocols.Filter]), "peers");
  const decoder = node.createDecoder({ contentTopic: args.contentTopic });
  const received = [];
  let done;
  const all = new Promise((resolve) => (done = resolve));
  const ok = await node.filter.subscribe(decoder, (message) => {
    received.push({ hash: hashOf(message), payload: bytesToUtf8(message.payload) });
    if (received.length >= args.count) done();
  });
  if (!ok) throw new Error("filter subscription failed");
  emit("ready");
  await withDeadline(all, "messages");
  emit("result", { received });
}

/// Page through the store both ways, `pageSize` at a time.
async function storePages(node) {
  await withDeadline(node.waitForPeers([Protocols.Store]), "peers");
  const decoder = node.createDecoder({ contentTopic: args.contentTopic });
  emit("result", await storePagesBothWays(node, decoder, args.pageSize));
}

/// Connect to one node only and let peer exchange find `expect`.
async function peerExchange(node) {
  const found = new Promise((resolve) => {
    const check = () => {
      const peers = node.libp2p.getConnections().map((c) => c.remotePeer.toString());
      if (peers.includes(args.expect)) resolve(peers);
    };
    node.libp2p.addEventListener("connection:open", check);
    check();
  });
  const peers = await withDeadline(found, "peer exchange");
  emit("result", { connected: [...new Set(peers)] });
}

/// Light push the way an app does after reconnecting, with js-waku's default send options:
/// `burst` messages at once (an outbox resent, a group message fanned out), then `loop` more
/// one after another as fast as the client goes. Reports every push js-waku counted as failed.
async function pushBurst(node) {
  await withDeadline(node.waitForPeers([Protocols.LightPush]), "peers");
  const encoder = node.createEncoder({ contentTopic: args.contentTopic });
  const failures = [];
  let pushed = 0;
  const push = async (label) => {
    const result = await node.lightPush.send(encoder, { payload: utf8ToBytes(label) });
    if (result.successes.length > 0) {
      pushed += 1;
    } else {
      failures.push({ label, errors: result.failures.map((f) => String(f.error)) });
    }
  };
  const started = Date.now();
  await withDeadline(
    Promise.all(Array.from({ length: args.burst }, (_, i) => push(`burst ${i}`))),
    "burst",
  );
  for (let i = 0; i < args.loop; i++) {
    await withDeadline(push(`loop ${i}`), "loop push");
  }
  emit("result", { pushed, failures, elapsedMs: Date.now() - started });
}

/// The nodes of the tree, through Node's resolver pointed at the test's name server: js-waku's
/// default DNS client asks public DoH servers, which cannot see a zone on loopback.
async function nodesOfTreeAtNameServer() {
  const resolver = new Resolver({ timeout: 2_000, tries: 3 });
  resolver.setServers([args.nameServer]);
  return nodesOfTree(args.enrTree, (fqdn) => resolver.resolveTxt(fqdn));
}

let discovered = [];

/// Light push one message through the nodes found in the tree (they are the only peers given).
async function dnsDiscovery(node) {
  await withDeadline(node.waitForPeers([Protocols.LightPush]), "peers");
  const encoder = node.createEncoder({ contentTopic: args.contentTopic });
  // A timestamp of its own, so that the hash computed here is the one js-waku sends.
  const message = { payload: utf8ToBytes("found through the DNS tree"), timestamp: new Date() };
  const hash = messageHashStr(encoder.pubsubTopic, await encoder.toProtoObj(message));
  const result = await node.lightPush.send(encoder, message);
  const connected = [...new Set(node.libp2p.getConnections().map((c) => c.remotePeer.toString()))];
  emit("result", {
    discovered,
    connected,
    hash,
    successes: result.successes.map(String),
    failures: result.failures.map((f) => String(f.error)),
  });
}

const scenarios = {
  "push-and-store": pushAndStore,
  "hash-lookup": hashLookup,
  filter: filterSubscribe,
  "store-pages": storePages,
  "peer-exchange": peerExchange,
  "push-burst": pushBurst,
  "dns-discovery": dnsDiscovery,
};

const run = scenarios[scenario];
if (!run) {
  console.error(`unknown scenario ${scenario}; one of ${Object.keys(scenarios).join(", ")}`);
  process.exit(2);
}
let node;
try {
  let extra = {};
  if (scenario === "peer-exchange") {
    extra = { discovery: { peerExchange: true } };
  } else if (scenario === "dns-discovery") {
    discovered = await withDeadline(nodesOfTreeAtNameServer(), "reading the DNS tree");
    log("found in the tree:", JSON.stringify(discovered));
    // The found addresses are the light node's only peers, as bootstrap peers are.
    extra = { node: { bootstrapPeers: discovered.flatMap((n) => n.multiaddrs) } };
  }
  node = await start(extra);
  await run(node);
  await node.stop();
  process.exit(0);
} catch (error) {
  log("failed:", error?.stack ?? error);
  emit("error", { message: String(error?.message ?? error) });
  process.exit(1);
}
