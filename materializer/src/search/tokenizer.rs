//! The search tokenizer: words are runs of Unicode letters and digits; a run of CJK
//! characters (Han, kana, Hangul), which has no spaces between words, is cut into overlapping
//! bigrams (a lone character stays a unigram), so a query of two or more such characters
//! matches inside longer text. Lower-casing and accent folding come after it, in the analyzer.

use tantivy::tokenizer::{
    AsciiFoldingFilter, LowerCaser, RemoveLongFilter, TextAnalyzer, Token, TokenStream, Tokenizer,
};

use crate::limits::SEARCH_TOKEN_BYTES_MAX;

/// The analyzer's name in the index's tokenizer manager.
pub const ANALYZER: &str = "feral";

/// The analyzer for summary, detail and queries.
pub fn analyzer() -> TextAnalyzer {
    TextAnalyzer::builder(WordsAndBigrams::default())
        .filter(RemoveLongFilter::limit(SEARCH_TOKEN_BYTES_MAX))
        .filter(LowerCaser)
        .filter(AsciiFoldingFilter)
        .build()
}

/// Han ideographs, Hiragana, Katakana and Hangul: scripts written without spaces.
fn is_cjk(c: char) -> bool {
    matches!(c as u32,
        0x3040..=0x30FF      // Hiragana, Katakana
        | 0x3400..=0x4DBF    // CJK Extension A
        | 0x4E00..=0x9FFF    // CJK Unified Ideographs
        | 0xAC00..=0xD7AF    // Hangul syllables
        | 0xF900..=0xFAFF    // CJK Compatibility Ideographs
        | 0x20000..=0x2FA1F) // Extensions B–F, compatibility supplement
}

/// See the module comment. The tokens of the last text are kept, and their buffers reused for
/// the next one (the indexing thread tokenizes every summary and detail).
#[derive(Debug, Clone, Default)]
pub struct WordsAndBigrams {
    tokens: Vec<Token>,
    len: usize,
}

/// The tokens of one text, cut up front.
#[derive(Debug)]
pub struct Stream<'a> {
    tokens: &'a mut [Token],
    next: usize,
}

impl Tokenizer for WordsAndBigrams {
    type TokenStream<'a> = Stream<'a>;

    fn token_stream<'a>(&'a mut self, text: &'a str) -> Stream<'a> {
        self.len = 0;
        let (tokens, len) = (&mut self.tokens, &mut self.len);
        let mut push = |from: usize, to: usize| {
            if *len == tokens.len() {
                tokens.push(Token::default());
            }
            let token = &mut tokens[*len];
            token.offset_from = from;
            token.offset_to = to;
            token.position = *len;
            token.position_length = 1;
            token.text.clear();
            token.text.push_str(&text[from..to]);
            *len += 1;
        };
        let mut chars = text.char_indices().peekable();
        while let Some((start, c)) = chars.next() {
            if is_cjk(c) {
                // Bigrams over the run: (c0 c1), (c1 c2), …; a run of one is itself.
                let mut previous = (start, c.len_utf8());
                let mut alone = true;
                while let Some(&(at, next)) = chars.peek().filter(|(_, n)| is_cjk(*n)) {
                    push(previous.0, at + next.len_utf8());
                    previous = (at, next.len_utf8());
                    alone = false;
                    chars.next();
                }
                if alone {
                    push(start, start + c.len_utf8());
                }
            } else if c.is_alphanumeric() {
                let mut end = start + c.len_utf8();
                while let Some(&(at, next)) =
                    chars.peek().filter(|(_, n)| n.is_alphanumeric() && !is_cjk(*n))
                {
                    end = at + next.len_utf8();
                    chars.next();
                }
                push(start, end);
            }
        }
        Stream { tokens: &mut self.tokens[..self.len], next: 0 }
    }
}

impl TokenStream for Stream<'_> {
    fn advance(&mut self) -> bool {
        self.next += 1;
        self.next <= self.tokens.len()
    }

    fn token(&self) -> &Token {
        &self.tokens[self.next - 1]
    }

    fn token_mut(&mut self) -> &mut Token {
        &mut self.tokens[self.next - 1]
    }
}

/// The analyzed terms of a text, in order (what the index holds for it, and what a query of
/// it looks for).
pub fn terms(text: &str) -> Vec<String> {
    let mut analyzer = analyzer();
    let mut stream = analyzer.token_stream(text);
    let mut out = Vec::new();
    while stream.advance() {
        out.push(stream.token().text.clone());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::terms;

    #[test]
    fn words_are_lower_cased_and_folded() {
        assert_eq!(terms("Café au LAIT, à Lyon!"), ["cafe", "au", "lait", "a", "lyon"]);
        assert_eq!(terms("naïve Zürich straße 42"), ["naive", "zurich", "strasse", "42"]);
    }

    #[test]
    fn cjk_runs_become_bigrams() {
        assert_eq!(terms("東京都に行く"), ["東京", "京都", "都に", "に行", "行く"]);
        assert_eq!(terms("東 tokyo"), ["東", "tokyo"]);
        assert_eq!(terms("서울 tower"), ["서울", "tower"]);
    }

    #[test]
    fn separators_and_empty_text_give_nothing() {
        assert!(terms("  ,;!? ").is_empty());
        assert!(terms("").is_empty());
    }
}
