//! Phone numbers: normalisation to E.164 (so equal numbers hash equally) and
//! masking for display.

use phonenumber::country::Id;

/// Longer input is not a phone number; the cap keeps the parser's work bounded.
const MAX_INPUT_CHARS: usize = 32;

/// Numbers with fewer national digits than this are masked down to their last
/// two digits, so that at least three digits are always hidden.
const MIN_DIGITS_FOR_PARTIAL_MASK: usize = 10;

/// Why a phone number was rejected. Messages never echo the number.
#[derive(Debug, thiserror::Error)]
pub enum PhoneError {
    #[error("not a valid phone number")]
    Invalid,
    #[error("unknown default region {0:?}; expected a two-letter country code such as \"CN\"")]
    UnknownRegion(String),
}

/// Normalises a phone number to E.164 (`+8613800138000`).
///
/// Numbers written with `+` or an international prefix (`00` in most regions)
/// carry their own country code; anything else is read as a national number of
/// `default_region` (e.g. `"CN"`). Extensions are dropped, since E.164 has none
/// and the number alone identifies the contact.
pub fn normalize_phone(input: &str, default_region: &str) -> Result<String, PhoneError> {
    let input = input.trim();
    if input.is_empty() || input.chars().count() > MAX_INPUT_CHARS {
        return Err(PhoneError::Invalid);
    }
    let region: Id = default_region
        .trim()
        .to_ascii_uppercase()
        .parse()
        .map_err(|_| PhoneError::UnknownRegion(default_region.to_owned()))?;

    let number = phonenumber::parse(Some(region), input).map_err(|_| PhoneError::Invalid)?;
    if !phonenumber::is_valid(&number) {
        return Err(PhoneError::Invalid);
    }
    // Built by hand rather than with the crate's formatter, whose Display can
    // fail (and `to_string` then panic) when metadata is missing.
    Ok(format!("+{}{}", number.code().value(), number.national()))
}

/// Masks an E.164 number for display, keeping the country code, the first 3 and
/// the last 4 national digits: `+8613800138000` → `+86 138****8000`.
/// Shorter national numbers keep only their last 2 digits; input that is not
/// E.164 is masked the same way without a country code.
pub fn mask_phone(e164: &str) -> String {
    match split_e164(e164) {
        Some((code, national)) if national.len() >= MIN_DIGITS_FOR_PARTIAL_MASK => {
            let hidden = national.len() - 7;
            format!(
                "+{code} {}{}{}",
                &national[..3],
                "*".repeat(hidden),
                &national[national.len() - 4..]
            )
        }
        Some((code, national)) => format!("+{code} {}", keep_last_two(national)),
        None => {
            let digits: String = e164.chars().filter(char::is_ascii_digit).collect();
            keep_last_two(&digits)
        }
    }
}

/// Splits `+<country code><national number>` into its two digit strings.
fn split_e164(e164: &str) -> Option<(String, &str)> {
    let digits = e164.strip_prefix('+')?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let number = phonenumber::parse(None, e164).ok()?;
    let code = number.code().value().to_string();
    let national = digits.strip_prefix(code.as_str())?;
    Some((code, national))
}

/// `digits` is ASCII, so byte offsets are character offsets.
fn keep_last_two(digits: &str) -> String {
    // With so few digits, showing any would show most of the number.
    if digits.len() <= 4 {
        return "*".repeat(digits.len().max(1));
    }
    let shown = digits.len() - 2;
    format!("{}{}", "*".repeat(shown), &digits[shown..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cn_mobile_in_common_spellings() {
        for input in [
            "13800138000",
            "138 0013 8000",
            "138-0013-8000",
            " 138 0013 8000 ",
            "+86 138-0013-8000",
            "+86 13800138000",
            "+8613800138000",
            "008613800138000",
            "0086 138 0013 8000",
            "(+86) 138 0013 8000",
        ] {
            assert_eq!(
                normalize_phone(input, "CN").unwrap(),
                "+8613800138000",
                "{input:?}"
            );
        }
    }

    #[test]
    fn region_is_case_insensitive() {
        assert_eq!(
            normalize_phone("13800138000", "cn").unwrap(),
            "+8613800138000"
        );
    }

    #[test]
    fn cn_landline_drops_trunk_prefix() {
        assert_eq!(
            normalize_phone("(010) 6552 9988", "CN").unwrap(),
            "+861065529988"
        );
        assert_eq!(
            normalize_phone("010-65529988", "CN").unwrap(),
            "+861065529988"
        );
        assert_eq!(
            normalize_phone("+86 10 6552 9988", "CN").unwrap(),
            "+861065529988"
        );
    }

    #[test]
    fn foreign_numbers_keep_their_country_code() {
        assert_eq!(
            normalize_phone("+1 201-555-0123", "CN").unwrap(),
            "+12015550123"
        );
        assert_eq!(
            normalize_phone("(201) 555-0123", "US").unwrap(),
            "+12015550123"
        );
    }

    #[test]
    fn invalid_numbers_are_rejected_without_echo() {
        for input in [
            "12345",
            "",
            "   ",
            "abc",
            "138 0013 800",
            "+86 138 0013 8000 0000 0000 0000 0000",
            "+999 1234567890",
        ] {
            let err = normalize_phone(input, "CN").unwrap_err();
            assert!(matches!(err, PhoneError::Invalid), "{input:?}: {err:?}");
            let message = err.to_string();
            assert!(input.trim().is_empty() || !message.contains(input.trim()));
        }
    }

    #[test]
    fn overlong_input_is_rejected() {
        let input = format!("13800138000{}", " ".repeat(30));
        assert!(
            normalize_phone(&input, "CN").is_ok(),
            "trailing space is trimmed"
        );
        let input = format!("138{}00138000", " ".repeat(30));
        assert!(matches!(
            normalize_phone(&input, "CN"),
            Err(PhoneError::Invalid)
        ));
    }

    #[test]
    fn unknown_region_is_its_own_error() {
        assert!(matches!(
            normalize_phone("13800138000", "QQ"),
            Err(PhoneError::UnknownRegion(region)) if region == "QQ"
        ));
    }

    #[test]
    fn masks_mobile_and_landline() {
        assert_eq!(mask_phone("+8613800138000"), "+86 138****8000");
        assert_eq!(mask_phone("+861065529988"), "+86 106***9988");
        assert_eq!(mask_phone("+12015550123"), "+1 201***0123");
    }

    #[test]
    fn masks_short_numbers_to_last_two() {
        // Singapore mobile: 8 national digits.
        assert_eq!(mask_phone("+6581234567"), "+65 ******67");
    }

    #[test]
    fn masks_non_e164_input_without_revealing_it() {
        assert_eq!(mask_phone("138 0013 8000"), "*********00");
        assert_eq!(mask_phone("123"), "***");
        assert_eq!(mask_phone(""), "*");
        assert_eq!(mask_phone("+"), "*");
    }

    #[test]
    fn normalised_numbers_mask_cleanly() {
        let e164 = normalize_phone("138 0013 8000", "CN").unwrap();
        assert_eq!(mask_phone(&e164), "+86 138****8000");
    }
}
