//! EIP-1459 DNS tree records as a name server answers them (roots, branches, `enr:` leaves,
//! `enrtree://` links), and whole zones walked by the verifier the DNS discovery task runs.
#![no_main]

use std::{
    collections::BTreeMap,
    future::Future,
    pin::pin,
    task::{Context, Poll, Waker},
};

use libfuzzer_sys::fuzz_target;
use roost_node::discovery::dns::tree::{self, Entry, Limits, Root, TreeUrl};

/// go-ethereum's dnsdisc test key (the EIP-1459 example zone is signed with it).
const URL: &str = "enrtree://AKPYQIUQIL7PSIACI32J7FGZW56E5FKHEFCCOFHILBIMW3M6LWXS2@n";

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // What is accepted writes itself back in a form that reads the same.
    if let Ok(root) = Root::parse(text) {
        assert_eq!(Root::parse(&root.text()).expect("a written root"), root);
    }
    if let Ok(Entry::Link(url)) = Entry::parse(text) {
        assert_eq!(
            url.to_string().parse::<TreeUrl>().expect("a written URL"),
            url
        );
    }
    let _ = text.parse::<TreeUrl>();
    // A zone of "<name> <text>" lines, walked as the node walks DNS answers. The map answers at
    // once, so one poll runs the walk to its end.
    let zone: BTreeMap<String, String> = text
        .lines()
        .filter_map(|line| line.split_once(' '))
        .map(|(name, record)| (name.to_owned(), record.to_owned()))
        .collect();
    let url: TreeUrl = URL.parse().expect("the test URL");
    let walk = pin!(tree::sync(&zone, &url, Limits { max_records: 64 }));
    let mut cx = Context::from_waker(Waker::noop());
    assert!(matches!(walk.poll(&mut cx), Poll::Ready(_)));
});
