//! Reading raw HTTP/1.1 responses, as tests that speak to the server over bare sockets get them.

/// The status code of a raw response, when a status line came back.
pub fn status_code(reply: &str) -> Option<u16> {
    reply
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
}

/// The value of a header in a raw response (case-insensitive name).
pub fn header_of<'a>(reply: &'a str, name: &str) -> Option<&'a str> {
    let head = reply.split("\r\n\r\n").next()?;
    head.lines().skip(1).find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.eq_ignore_ascii_case(name).then(|| value.trim())
    })
}

/// The body of a raw response; empty when there is none.
pub fn body_of(reply: &str) -> &str {
    reply.split_once("\r\n\r\n").map_or("", |(_, body)| body)
}
