"""The servers warptasks can start, one module each."""
