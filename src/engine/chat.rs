//! Turning a conversation into the text a model reads.
//!
//! A model that ships a chat template is rendered through llama.cpp's template engine. A model
//! without one (base models such as Gemma 3 270M) gets tuningfork's plain conversation format:
//!
//! ```text
//! {system}
//!
//! User: {user}
//!
//! Assistant: {assistant}
//!
//! User: {user}
//!
//! Assistant:
//! ```
//!
//! The system block is present only when the conversation has a system message. Generation
//! with the plain format also stops at a new `User:` turn ([`PLAIN_STOP`]).

use super::request::{Message, Role};

/// The stop string added to every request rendered in the plain conversation format.
pub const PLAIN_STOP: &str = "\nUser:";

/// Renders `messages` in the plain conversation format, ending with an open assistant turn.
pub fn render_plain(messages: &[Message]) -> String {
    let mut out = String::new();
    for message in messages {
        match message.role {
            Role::System => {
                out.push_str(message.content.trim_end());
                out.push_str("\n\n");
            }
            Role::User => {
                out.push_str("User: ");
                out.push_str(message.content.trim_end());
                out.push_str("\n\n");
            }
            Role::Assistant => {
                out.push_str("Assistant: ");
                out.push_str(message.content.trim_end());
                out.push_str("\n\n");
            }
        }
    }
    out.push_str("Assistant:");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_format_is_stable() {
        let text = render_plain(&[
            Message::system("Answer briefly."),
            Message::user("2+2?"),
            Message::assistant("4"),
            Message::user("3+3?"),
        ]);
        assert_eq!(
            text,
            "Answer briefly.\n\nUser: 2+2?\n\nAssistant: 4\n\nUser: 3+3?\n\nAssistant:"
        );
        assert_eq!(
            render_plain(&[Message::user("hi")]),
            "User: hi\n\nAssistant:"
        );
    }
}
