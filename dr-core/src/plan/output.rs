//! Bounded capture of command output: the head and the tail are kept, the
//! middle is counted, so a chatty command cannot fill memory or the journal.

/// A byte buffer that keeps the first `head` and the last `tail` bytes.
#[derive(Debug, Clone)]
pub struct BoundedBuffer {
    head: Vec<u8>,
    tail: std::collections::VecDeque<u8>,
    head_cap: usize,
    tail_cap: usize,
    dropped: u64,
}

impl BoundedBuffer {
    /// A buffer keeping at most `limit` bytes: a quarter from the start, the
    /// rest from the end (errors are usually at the end).
    pub fn new(limit: usize) -> Self {
        let head_cap = limit / 4;
        BoundedBuffer {
            head: Vec::new(),
            tail: std::collections::VecDeque::new(),
            head_cap,
            tail_cap: limit - head_cap,
            dropped: 0,
        }
    }

    /// Appends bytes.
    pub fn extend(&mut self, mut bytes: &[u8]) {
        let room = self.head_cap - self.head.len();
        if room > 0 {
            let n = room.min(bytes.len());
            self.head.extend_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
        }
        self.tail.extend(bytes);
        while self.tail.len() > self.tail_cap {
            let excess = self.tail.len() - self.tail_cap;
            self.tail.drain(..excess);
            self.dropped += excess as u64;
        }
    }

    /// Bytes left out.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// The kept text (lossy UTF-8), with a marker where bytes were left out.
    pub fn to_text(&self) -> String {
        let mut s = String::from_utf8_lossy(&self.head).into_owned();
        if self.dropped > 0 {
            s.push_str(&format!("\n[... {} bytes left out ...]\n", self.dropped));
        }
        let tail: Vec<u8> = self.tail.iter().copied().collect();
        s.push_str(&String::from_utf8_lossy(&tail));
        s
    }
}

/// `text` cut to at most about `limit` bytes (head and tail kept).
pub fn bound_text(text: &str, limit: usize) -> String {
    if text.len() <= limit {
        return text.to_string();
    }
    let mut b = BoundedBuffer::new(limit);
    b.extend(text.as_bytes());
    b.to_text()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_head_and_tail() {
        let mut b = BoundedBuffer::new(8);
        b.extend(b"0123456789");
        b.extend(b"abcdef");
        assert_eq!(b.dropped(), 8);
        assert_eq!(b.to_text(), "01\n[... 8 bytes left out ...]\nabcdef");
        assert_eq!(bound_text("short", 8), "short");
    }
}
