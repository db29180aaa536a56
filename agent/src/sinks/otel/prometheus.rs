//! `--prometheus-listen`: the metrics in Prometheus text format on `GET /metrics`,
//! cumulative, names translated the OpenTelemetry way (`gen_ai.server.request.duration`
//! in seconds → `gen_ai_server_request_duration_seconds`). One thread answers
//! scrapes one at a time, with timeouts, so a stuck client cannot pile up work.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    time::Duration,
};

use prometheus::{Encoder, Registry, TextEncoder};

use super::TelemetryError;

/// Longest request head read from a scraper.
const MAX_REQUEST_HEAD: usize = 8192;

/// Binds `addr` and answers scrapes on a thread of its own for the life of the process.
pub fn serve_in_background(addr: SocketAddr, registry: Registry) -> Result<(), TelemetryError> {
    let listener = TcpListener::bind(addr).map_err(|source| TelemetryError::Listen { addr, source })?;
    std::thread::Builder::new()
        .name("prometheus".into())
        .spawn(move || serve(listener, registry))
        .map_err(|source| TelemetryError::Listen { addr, source })?;
    log::info!("serving Prometheus metrics on http://{addr}/metrics");
    Ok(())
}

fn serve(listener: TcpListener, registry: Registry) {
    for stream in listener.incoming() {
        let result = stream.and_then(|stream| answer(stream, &registry));
        if let Err(e) = result {
            log::debug!("Prometheus scrape: {e}");
        }
    }
}

fn answer(mut stream: TcpStream, registry: &Registry) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.set_write_timeout(Some(Duration::from_secs(10)))?;
    let head = read_head(&mut stream)?;
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut request = httparse::Request::new(&mut headers);
    let (status, body) = match request.parse(&head) {
        Ok(_)
            if request.method == Some("GET")
                && request
                    .path
                    .is_some_and(|p| p.split('?').next() == Some("/metrics")) =>
        {
            let mut body = Vec::new();
            match TextEncoder::new().encode(&registry.gather(), &mut body) {
                Ok(()) => ("200 OK", body),
                Err(e) => ("500 Internal Server Error", e.to_string().into_bytes()),
            }
        }
        Ok(_) => ("404 Not Found", b"only GET /metrics is served\n".to_vec()),
        Err(_) => ("400 Bad Request", b"malformed request\n".to_vec()),
    };
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        TextEncoder::new().format_type(),
        body.len()
    )?;
    stream.write_all(&body)
}

/// Reads up to the blank line ending the request head (or the size limit).
fn read_head(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_REQUEST_HEAD {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    Ok(head)
}
