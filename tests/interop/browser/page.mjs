// The browser side of the browser test: js-waku (@waku/sdk) in a web page, as an app uses it.
// Bundled by run.mjs with esbuild and loaded in headless Chromium; tests/tests/it/browser.rs
// drives it.
//
// With `enrTree` in its arguments the page instead bootstraps from that EIP-1459 tree through
// js-waku's DNS discovery, reading it over the JSON DoH API from `dohServer`, and light pushes
// one message ({"event":"result"} with what it found).
//
// Arguments come in the page's URL fragment (JSON). Events go back through `window.roostEmit`
// (exposed by run.mjs): {"event":"connected"}, {"event":"ready"} once the filter subscription is
// up (the Rust side then publishes at another node), then {"event":"result", ...} once, or
// {"event":"error", "message"}. Hashes are computed with @waku/message-hash.

import { createLightNode, Protocols, utf8ToBytes, bytesToUtf8 } from "@waku/sdk";
import { messageHashStr } from "@waku/message-hash";
import DnsOverHttpResolver from "dns-over-http-resolver";
import { hashOf, nodesOfTree, storePagesBothWays } from "../common.mjs";

const args = JSON.parse(decodeURIComponent(location.hash.slice(1)));
// Each step's deadline (run.mjs has one for the whole run).
const TIMEOUT_MS = args.stepTimeoutMs ?? 20_000;

function emit(event, fields = {}) {
  return window.roostEmit({ event, ...fields });
}

// `what` is a string, or a function giving one when the deadline passes.
async function withDeadline(promise, what) {
  let timer;
  const deadline = new Promise((_, reject) => {
    timer = setTimeout(() => {
      const doing = typeof what === "function" ? what() : what;
      reject(new Error(`timed out after ${TIMEOUT_MS} ms ${doing}`));
    }, TIMEOUT_MS);
  });
  try {
    return await Promise.race([promise, deadline]);
  } finally {
    clearTimeout(timer);
  }
}


// What the connected peers told identify they serve (for a failure message).
async function connectedPeers(node) {
  const peers = {};
  for (const connection of node.libp2p.getConnections()) {
    const peer = await node.libp2p.peerStore.get(connection.remotePeer).catch(() => null);
    peers[connection.remotePeer.toString()] = peer?.protocols ?? [];
  }
  return peers;
}

async function main() {
  // What a browser app writes, given one node's address. The only departure from js-waku's
  // defaults: the node is on plain ws (loopback), which js-waku filters out unless told.
  const node = await createLightNode({
    defaultBootstrap: false,
    bootstrapPeers: [args.peer],
    libp2p: { filterMultiaddrs: false },
  });
  await node.start();
  try {
    await withDeadline(
      node.waitForPeers([Protocols.LightPush, Protocols.Filter, Protocols.Store]),
      "waiting for a peer serving light push, filter and store",
    );
  } catch (error) {
    throw new Error(`${error.message}; connected: ${JSON.stringify(await connectedPeers(node))}`);
  }
  emit("connected", { userAgent: navigator.userAgent });

  // Filter: subscribe, then tell the Rust side to publish elsewhere.
  const received = [];
  let allReceived;
  const receivedAll = new Promise((resolve) => (allReceived = resolve));
  const filterDecoder = node.createDecoder({ contentTopic: args.filterTopic });
  const subscribed = await node.filter.subscribe(filterDecoder, (message) => {
    received.push({ hash: hashOf(message), payload: bytesToUtf8(message.payload) });
    if (received.length >= args.filterCount) allReceived();
  });
  if (!subscribed) throw new Error("filter subscription failed");
  await emit("ready");

  // Light push, one message a millisecond apart so that the store has an order to keep.
  const encoder = node.createEncoder({ contentTopic: args.pushTopic });
  const pushed = [];
  const failures = [];
  const base = Date.now() - args.pushCount;
  for (let i = 0; i < args.pushCount; i++) {
    const message = { payload: utf8ToBytes(`from the browser ${i}`), timestamp: new Date(base + i) };
    const hash = messageHashStr(encoder.pubsubTopic, await encoder.toProtoObj(message));
    const result = await node.lightPush.send(encoder, message);
    if (result.successes.length > 0) {
      pushed.push(hash);
    } else {
      failures.push({ hash, errors: result.failures.map((f) => String(f.error)) });
    }
  }

  await withDeadline(
    receivedAll,
    () => `waiting for ${args.filterCount} filter messages (got ${received.length})`,
  );

  // Store: page through what was pushed, both ways.
  const decoder = node.createDecoder({ contentTopic: args.pushTopic });
  const pages = await storePagesBothWays(node, decoder, args.pageSize);

  await node.stop();
  await emit("result", { pubsubTopic: encoder.pubsubTopic, pushed, failures, received, pages });
}

// The nodes of the tree, read with the DoH client js-waku uses by default
// (dns-over-http-resolver), pointed at the test's DoH server instead of the public ones (which
// cannot see a zone on loopback).
function nodesOfTreeOverDoh() {
  const resolver = new DnsOverHttpResolver();
  resolver.setServers([args.dohServer]);
  return nodesOfTree(args.enrTree, (fqdn) => resolver.resolveTxt(fqdn));
}

async function bootstrapFromTree() {
  const discovered = await withDeadline(nodesOfTreeOverDoh(), "reading the DNS tree");
  // The addresses found are the node's only peers; a browser dials their WebSocket ones.
  const bootstrapPeers = discovered.flatMap((n) => n.multiaddrs);
  const node = await createLightNode({
    defaultBootstrap: false,
    bootstrapPeers,
    libp2p: { filterMultiaddrs: false },
  });
  await node.start();
  try {
    await withDeadline(node.waitForPeers([Protocols.LightPush]), "waiting for a light push peer");
  } catch (error) {
    throw new Error(`${error.message}; found: ${JSON.stringify(discovered)}`);
  }
  const encoder = node.createEncoder({ contentTopic: args.contentTopic });
  // A timestamp of its own, so that the hash computed here is the one js-waku sends.
  const message = { payload: utf8ToBytes("found through the DNS tree"), timestamp: new Date() };
  const hash = messageHashStr(encoder.pubsubTopic, await encoder.toProtoObj(message));
  const result = await node.lightPush.send(encoder, message);
  const connected = [...new Set(node.libp2p.getConnections().map((c) => c.remotePeer.toString()))];
  await node.stop();
  await emit("result", {
    userAgent: navigator.userAgent,
    discovered,
    connected,
    hash,
    successes: result.successes.map(String),
    failures: result.failures.map((f) => String(f.error)),
  });
}

(args.enrTree ? bootstrapFromTree() : main()).catch((error) => {
  console.error("failed:", error?.stack ?? String(error));
  emit("error", { message: String(error?.message ?? error) });
});
