// What the js-waku scenarios share, in Node (interop.mjs) and in the browser page
// (browser/page.mjs, bundled by esbuild): how a message is hashed, how the store is paged and
// how the nodes of a DNS tree are found.

import { messageHashStr } from "@waku/message-hash";
import { DnsNodeDiscovery } from "@waku/discovery";

// Hash the message as it was on the wire: a decoded message's `timestamp` is a Date (whole
// milliseconds), its `proto` keeps the nanoseconds the hash covers.
export function hashOf(message) {
  return messageHashStr(message.pubsubTopic, message.proto ?? message);
}

// Page through the store for `decoder` both ways, `pageSize` at a time, as an app does with
// `store.queryGenerator`: { forward: [[hash, ...], ...], backward: [...] }.
export async function storePagesBothWays(node, decoder, pageSize) {
  const pages = {};
  for (const forward of [true, false]) {
    const collected = [];
    for await (const page of node.store.queryGenerator([decoder], {
      paginationForward: forward,
      paginationLimit: pageSize,
    })) {
      collected.push((await Promise.all(page)).filter(Boolean).map(hashOf));
    }
    pages[forward ? "forward" : "backward"] = collected;
  }
  return pages;
}

// The nodes of the EIP-1459 tree `enrTree`, found the way `wakuDnsDiscovery` finds them:
// js-waku's DnsNodeDiscovery walks the tree from its root, verifies the root's signature against
// the URL's key and each record against its hash, and yields the ENRs of Waku nodes. `resolveTxt`
// is the DNS lookup (Node's resolver or a DoH client), giving node:dns's shape (an array of
// character-strings per record); it is handed to js-waku through `dnsOverHttp(dnsClient)`.
// Returns each node's peer id, addresses (with /p2p), cluster, shards and waku2 flags.
export async function nodesOfTree(enrTree, resolveTxt) {
  // DnsOverHttps.resolveTXT's shape: every character-string of every answer, in order.
  const dnsClient = { resolveTXT: async (fqdn) => (await resolveTxt(fqdn)).flat() };
  const discovery = await DnsNodeDiscovery.dnsOverHttp(dnsClient);
  const found = [];
  for await (const enr of discovery.getNextPeer([enrTree])) {
    const info = enr.peerInfo;
    if (!info) continue;
    const peerId = info.id.toString();
    found.push({
      peerId,
      multiaddrs: info.multiaddrs
        .map((m) => m.toString())
        .map((m) => (m.includes("/p2p/") ? m : `${m}/p2p/${peerId}`)),
      clusterId: enr.shardInfo?.clusterId ?? null,
      shards: enr.shardInfo?.shards ?? [],
      waku2: enr.waku2,
    });
  }
  return found;
}
