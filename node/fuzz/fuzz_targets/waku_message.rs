//! A WakuMessage as relay receives it: the relay validator (decode, size, version, meta, content
//! topic), then re-encoding and hashing what it accepted.
#![no_main]

use libfuzzer_sys::fuzz_target;
use roost_node::{message::ContentTopic, relay, WakuMessage};

fuzz_target!(|data: &[u8]| {
    let config = relay::Config::default();
    let validator = relay::Validator::new(&config);
    let topic = config.pubsub_topics()[0].to_string();
    if let Ok(message) = validator.validate(&topic, data) {
        // What was accepted re-encodes to something that decodes to the same message.
        let again = WakuMessage::decode(&message.encode_to_vec()).expect("re-encoded message");
        assert_eq!(again, message);
        let _ = message.hash(&topic);
        if let Ok(content) = ContentTopic::parse(&message.content_topic) {
            let _ = content.shard(8);
        }
    }
    let _ = WakuMessage::decode(data);
});
