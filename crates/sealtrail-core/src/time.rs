//! Timestamps: RFC 3339 in, UTC with exactly six fractional digits and `Z` out
//! (`2023-11-07T05:31:56.000000Z`). Sub-microsecond digits are truncated.

use chrono::{DateTime, Datelike, SecondsFormat, TimeZone, Utc};

/// Microseconds since the Unix epoch, UTC. The one clock type the core knows.
pub type Micros = i64;

/// Parses an RFC 3339 date-time with any offset and returns it as UTC microseconds.
pub fn parse_rfc3339(text: &str) -> Result<Micros, String> {
    let parsed = DateTime::parse_from_rfc3339(text).map_err(|err| {
        format!("{text:?} is not an RFC 3339 date-time such as 2023-11-07T05:31:56Z ({err})")
    })?;
    // The range is checked on the microseconds returned, not on chrono's value: a leap
    // second (`23:59:60`) is second 59 there, but one second later here, so
    // `9999-12-31T23:59:60Z` would become year 10000, which RFC 3339 cannot write.
    let micros = parsed.with_timezone(&Utc).timestamp_micros();
    let in_range = Utc
        .timestamp_micros(micros)
        .single()
        .is_some_and(|utc| (1..=9999).contains(&utc.year()));
    if !in_range {
        return Err(format!(
            "{text:?} is outside the years 0001 to 9999 once converted to UTC"
        ));
    }
    Ok(micros)
}

/// Formats UTC microseconds as the normalized wire form.
pub fn format_micros(micros: Micros) -> String {
    let utc = Utc
        .timestamp_micros(micros)
        .single()
        .expect("micros in range come from parse_rfc3339 or the clock");
    utc.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// Normalizes an RFC 3339 date-time to the wire form.
pub fn normalize(text: &str) -> Result<String, String> {
    parse_rfc3339(text).map(format_micros)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_offsets_and_precision() {
        assert_eq!(
            normalize("2023-11-07T05:31:56Z").unwrap(),
            "2023-11-07T05:31:56.000000Z"
        );
        assert_eq!(
            normalize("2023-11-07T07:31:56.5+02:00").unwrap(),
            "2023-11-07T05:31:56.500000Z"
        );
        assert_eq!(
            normalize("2023-11-07T05:31:56.123456789Z").unwrap(),
            "2023-11-07T05:31:56.123456Z"
        );
        assert_eq!(
            normalize("2023-11-06T23:31:56.000001-06:00").unwrap(),
            "2023-11-07T05:31:56.000001Z"
        );
    }

    #[test]
    fn rejects_non_rfc3339() {
        for bad in [
            "2023-11-07",
            "2023-11-07T05:31:56",
            "yesterday",
            "2023-13-07T05:31:56Z",
            "",
            "0000-01-01T00:30:00+01:00",
            // a leap second at the very end of year 9999 is year 10000 in microseconds
            "9999-12-31T23:59:60Z",
            "9999-12-31T23:59:60.5+00:00",
        ] {
            assert!(normalize(bad).is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn a_leap_second_is_the_next_second_and_round_trips() {
        assert_eq!(
            normalize("2016-12-31T23:59:60Z").unwrap(),
            "2017-01-01T00:00:00.000000Z"
        );
        let last = normalize("9999-12-31T23:59:59.999999Z").unwrap();
        assert_eq!(normalize(&last).unwrap(), last);
    }

    #[test]
    fn round_trips() {
        let t = "1999-12-31T23:59:59.999999Z";
        assert_eq!(format_micros(parse_rfc3339(t).unwrap()), t);
    }
}
