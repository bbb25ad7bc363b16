// What the js-waku scenarios share, in Node (interop.mjs) and in the browser page
// (browser/page.mjs, bundled by esbuild): how a message is hashed and how the store is paged.

import { messageHashStr } from "@waku/message-hash";

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
