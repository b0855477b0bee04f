"""Built-in rules, checkups and predictors, mapped from the top-level folders at install time."""
