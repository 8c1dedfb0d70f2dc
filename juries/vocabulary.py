"""Canonical attributes and group labels (shared/data FORMAT 1), in their natural order.

Other packages match survey distributions by these exact strings, so the built-in frame must use them verbatim.
"""

CANONICAL_GROUPS: dict[str, tuple[str, ...]] = {
    "party": ("Democrat", "Republican", "Independent", "Other"),
    "ideology": ("Very liberal", "Liberal", "Moderate", "Conservative", "Very conservative"),
    "age": ("18-29", "30-49", "50-64", "65+"),
    "sex": ("Male", "Female"),
    "race": ("White", "Black", "Asian", "Hispanic", "Other"),
    "education": (
        "Less than high school",
        "High school graduate",
        "Some college, no degree",
        "Associate's degree",
        "College graduate/some postgrad",
        "Postgraduate",
    ),
    "income": ("Less than $30,000", "$30,000-$50,000", "$50,000-$75,000", "$75,000-$100,000", "$100,000 or more"),
    "region": ("Northeast", "Midwest", "South", "West"),
    # Religion labels are free in FORMAT 1; these are the ones the built-in frame uses.
    "religion": ("Protestant", "Roman Catholic", "Unaffiliated", "Jewish", "Muslim", "Other"),
}

ATTRIBUTES: tuple[str, ...] = tuple(CANONICAL_GROUPS)


def order_groups(attribute: str, groups: set[str]) -> list[str]:
    """Canonical order where the attribute is canonical, then any other labels alphabetically."""
    canon = CANONICAL_GROUPS.get(attribute, ())
    known = [g for g in canon if g in groups]
    return known + sorted(groups - set(known))
