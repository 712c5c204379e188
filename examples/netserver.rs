//! The network tests' HTTP server (tests/http_support) as a program, for benches/network.sh:
//!
//!     netserver DIR [--rate BYTES_PER_S] [--drops OFFSET,OFFSET,...] [--port N]
//!
//! Serves DIR on 127.0.0.1 with Range/If-Range and ETags, at most BYTES_PER_S per connection, and
//! cuts each download (every request without a Range header starts one) at the offsets given.
//! Prints the base URL on a line, then serves until killed.

#[path = "../tests/http_support/mod.rs"]
mod http_support;

use std::path::PathBuf;

fn main() {
    let mut args = std::env::args().skip(1);
    let mut dir = None;
    let mut b = http_support::Behaviour::default();
    let mut port = 0u16;
    let usage = || -> ! {
        eprintln!("usage: netserver DIR [--rate BYTES_PER_S] [--drops OFFSET,...] [--port N]");
        std::process::exit(2)
    };
    while let Some(a) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| usage());
        match a.as_str() {
            "--rate" => b.rate = value().parse().unwrap_or_else(|_| usage()),
            "--port" => port = value().parse().unwrap_or_else(|_| usage()),
            "--drops" => {
                b.repeat_drops = value()
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(|s| s.parse().unwrap_or_else(|_| usage()))
                    .collect();
            }
            _ if dir.is_none() && !a.starts_with('-') => dir = Some(PathBuf::from(a)),
            _ => usage(),
        }
    }
    let dir = dir.unwrap_or_else(|| usage());
    let server = http_support::TestServer::start_on(&dir, b, port);
    println!("{}", server.base);
    loop {
        std::thread::park();
    }
}
