"""Published figures behind the built-in "us_adults" frame.

Two kinds of numbers live here:

* MARGINALS: adult shares per attribute, rounded from the sources cited beside each. The synthesized records are
  raked to these, so the frame reproduces them (to about 0.1 point).
* Conditional tables (BASE_* and *_FACTORS): the shape of the correlations between attributes (who is a Democrat,
  who holds a degree, ...). They are approximations read off the cited cross-tabulations, rounded to a few points;
  raking to the marginals then keeps their odds ratios while fixing the totals. They are not meant to be exact
  cross-tabs, only to keep e.g. party and ideology from being independent.

Sources
  [ACS]   U.S. Census Bureau, American Community Survey 2022 1-year estimates: S0101 (age, sex; adults 18+),
          B03002 (Hispanic origin by race), S1501 (educational attainment; the 18-24 and 25+ blocks combined),
          S1901 (household income in 2022 dollars, brackets re-cut at $30k/$50k/$75k/$100k).
  [PEP]   U.S. Census Bureau, Vintage 2022 population estimates by region (NST-EST2022).
  [RLS]   Pew Research Center, 2023-24 Religious Landscape Study (published Feb. 2025): Protestant 40%,
          Catholic 19%, unaffiliated 29%, Jewish 2%, Muslim 1%; other Christian and other faiths pooled as Other.
  [NPORS] Pew Research Center, National Public Opinion Reference Survey 2024: party identification of all adults
          (Republican, Democrat, independent, something else), rounded.
  [GALLUP] Gallup, U.S. political ideology (five-point scale), 2023 annual aggregate, rounded.
  [PEW-COAL] Pew Research Center, "Changing Partisan Coalitions in a Politically Divided Nation" (April 2024):
          party by race, age, education and religion; ideology within each party.
  [PEW-RACE] Pew Research Center fact sheets on Hispanic, Black and Asian Americans (2023-24): regional
          distribution, age structure and religion by race and ethnicity.
"""

from __future__ import annotations

Table = dict[str, dict[str, float]]

MARGINALS: dict[str, dict[str, float]] = {
    # [ACS] S0101, adults 18+.
    "age": {"18-29": 0.205, "30-49": 0.330, "50-64": 0.245, "65+": 0.220},
    "sex": {"Male": 0.490, "Female": 0.510},
    # [ACS] B03002, adults; Hispanic of any race is "Hispanic", the others non-Hispanic.
    "race": {"White": 0.615, "Black": 0.120, "Asian": 0.060, "Hispanic": 0.170, "Other": 0.035},
    # [ACS] S1501.
    "education": {
        "Less than high school": 0.105,
        "High school graduate": 0.270,
        "Some college, no degree": 0.165,
        "Associate's degree": 0.100,
        "College graduate/some postgrad": 0.225,
        "Postgraduate": 0.135,
    },
    # [ACS] S1901, household income.
    "income": {
        "Less than $30,000": 0.210,
        "$30,000-$50,000": 0.150,
        "$50,000-$75,000": 0.165,
        "$75,000-$100,000": 0.125,
        "$100,000 or more": 0.350,
    },
    # [PEP]
    "region": {"Northeast": 0.171, "Midwest": 0.206, "South": 0.387, "West": 0.236},
    # [RLS], renormalised without "no answer".
    "religion": {
        "Protestant": 0.405,
        "Roman Catholic": 0.190,
        "Unaffiliated": 0.290,
        "Jewish": 0.020,
        "Muslim": 0.010,
        "Other": 0.085,
    },
    # [NPORS]
    "party": {"Democrat": 0.310, "Republican": 0.290, "Independent": 0.320, "Other": 0.080},
    # [GALLUP]
    "ideology": {
        "Very liberal": 0.080,
        "Liberal": 0.180,
        "Moderate": 0.370,
        "Conservative": 0.260,
        "Very conservative": 0.110,
    },
}

# --- conditional shapes, in the order the records are generated -------------------------------------------------

# Women outlive men: the 65+ band is about 55% female [ACS S0101].
SEX_BY_AGE: Table = {
    "18-29": {"Male": 0.51, "Female": 0.49},
    "30-49": {"Male": 0.50, "Female": 0.50},
    "50-64": {"Male": 0.49, "Female": 0.51},
    "65+": {"Male": 0.45, "Female": 0.55},
}

# Younger adults are more Hispanic and Asian, older adults more White [ACS B03002 by age; PEW-RACE].
RACE_BY_AGE: Table = {
    "18-29": {"White": 0.52, "Black": 0.14, "Asian": 0.07, "Hispanic": 0.23, "Other": 0.04},
    "30-49": {"White": 0.56, "Black": 0.13, "Asian": 0.075, "Hispanic": 0.20, "Other": 0.035},
    "50-64": {"White": 0.65, "Black": 0.12, "Asian": 0.055, "Hispanic": 0.14, "Other": 0.035},
    "65+": {"White": 0.75, "Black": 0.09, "Asian": 0.045, "Hispanic": 0.09, "Other": 0.025},
}

# Black Americans are concentrated in the South, Asian and Hispanic Americans in the West and South [PEW-RACE].
REGION_BY_RACE: Table = {
    "White": {"Northeast": 0.19, "Midwest": 0.25, "South": 0.34, "West": 0.22},
    "Black": {"Northeast": 0.16, "Midwest": 0.17, "South": 0.57, "West": 0.10},
    "Asian": {"Northeast": 0.20, "Midwest": 0.12, "South": 0.24, "West": 0.44},
    "Hispanic": {"Northeast": 0.09, "Midwest": 0.07, "South": 0.42, "West": 0.42},
    "Other": {"Northeast": 0.13, "Midwest": 0.18, "South": 0.33, "West": 0.36},
}

# Attainment by age [ACS S1501]: 18-29 are often still in college; older cohorts hold fewer degrees.
EDUCATION_BY_AGE: Table = {
    "18-29": {"Less than high school": 0.10, "High school graduate": 0.28, "Some college, no degree": 0.28,
              "Associate's degree": 0.08, "College graduate/some postgrad": 0.21, "Postgraduate": 0.05},
    "30-49": {"Less than high school": 0.09, "High school graduate": 0.24, "Some college, no degree": 0.14,
              "Associate's degree": 0.10, "College graduate/some postgrad": 0.25, "Postgraduate": 0.18},
    "50-64": {"Less than high school": 0.09, "High school graduate": 0.29, "Some college, no degree": 0.14,
              "Associate's degree": 0.11, "College graduate/some postgrad": 0.21, "Postgraduate": 0.16},
    "65+": {"Less than high school": 0.12, "High school graduate": 0.30, "Some college, no degree": 0.15,
            "Associate's degree": 0.09, "College graduate/some postgrad": 0.19, "Postgraduate": 0.15},
}
# Attainment gaps by race and ethnicity [ACS S1501 by race].
EDUCATION_FACTORS_BY_RACE: Table = {
    "White": {"Less than high school": 0.7},
    "Black": {"Less than high school": 1.2, "College graduate/some postgrad": 0.75, "Postgraduate": 0.75},
    "Asian": {"Less than high school": 0.8, "High school graduate": 0.6, "College graduate/some postgrad": 1.7,
              "Postgraduate": 2.0},
    "Hispanic": {"Less than high school": 2.2, "College graduate/some postgrad": 0.6, "Postgraduate": 0.5},
}

# Household income rises steeply with education [ACS S1901 / B20004].
INCOME_BY_EDUCATION: Table = {
    "Less than high school": {"Less than $30,000": 0.45, "$30,000-$50,000": 0.22, "$50,000-$75,000": 0.16,
                              "$75,000-$100,000": 0.08, "$100,000 or more": 0.09},
    "High school graduate": {"Less than $30,000": 0.30, "$30,000-$50,000": 0.20, "$50,000-$75,000": 0.19,
                             "$75,000-$100,000": 0.13, "$100,000 or more": 0.18},
    "Some college, no degree": {"Less than $30,000": 0.24, "$30,000-$50,000": 0.18, "$50,000-$75,000": 0.18,
                                "$75,000-$100,000": 0.14, "$100,000 or more": 0.26},
    "Associate's degree": {"Less than $30,000": 0.18, "$30,000-$50,000": 0.17, "$50,000-$75,000": 0.19,
                           "$75,000-$100,000": 0.15, "$100,000 or more": 0.31},
    "College graduate/some postgrad": {"Less than $30,000": 0.10, "$30,000-$50,000": 0.11,
                                       "$50,000-$75,000": 0.15, "$75,000-$100,000": 0.14,
                                       "$100,000 or more": 0.50},
    "Postgraduate": {"Less than $30,000": 0.07, "$30,000-$50,000": 0.08, "$50,000-$75,000": 0.12,
                     "$75,000-$100,000": 0.12, "$100,000 or more": 0.61},
}
# Young and retired households earn less [ACS S1901 by householder age].
INCOME_FACTORS_BY_AGE: Table = {
    "18-29": {"Less than $30,000": 1.3, "$100,000 or more": 0.8},
    "50-64": {"$100,000 or more": 1.1},
    "65+": {"Less than $30,000": 1.3, "$100,000 or more": 0.75},
}

# Religion by race and ethnicity [RLS; PEW-RACE]: Black Americans mostly Protestant, Hispanic Americans
# plurality Catholic, Asian Americans often Hindu or Buddhist (pooled in Other).
RELIGION_BY_RACE: Table = {
    "White": {"Protestant": 0.42, "Roman Catholic": 0.17, "Unaffiliated": 0.31, "Jewish": 0.03, "Muslim": 0.002,
              "Other": 0.068},
    "Black": {"Protestant": 0.62, "Roman Catholic": 0.05, "Unaffiliated": 0.25, "Jewish": 0.005, "Muslim": 0.02,
              "Other": 0.055},
    "Asian": {"Protestant": 0.17, "Roman Catholic": 0.13, "Unaffiliated": 0.36, "Jewish": 0.005, "Muslim": 0.06,
              "Other": 0.275},
    "Hispanic": {"Protestant": 0.25, "Roman Catholic": 0.43, "Unaffiliated": 0.28, "Jewish": 0.002,
                 "Muslim": 0.003, "Other": 0.035},
    "Other": {"Protestant": 0.35, "Roman Catholic": 0.12, "Unaffiliated": 0.38, "Jewish": 0.01, "Muslim": 0.01,
              "Other": 0.13},
}
# Young adults are far more often unaffiliated than the oldest [RLS by generation].
RELIGION_FACTORS_BY_AGE: Table = {
    "18-29": {"Unaffiliated": 1.5},
    "50-64": {"Unaffiliated": 0.8},
    "65+": {"Unaffiliated": 0.55},
}

# Party by race [PEW-COAL]; leaners are left as independents, as in a party-ID question without a follow-up.
PARTY_BY_RACE: Table = {
    "White": {"Democrat": 0.25, "Republican": 0.40, "Independent": 0.28, "Other": 0.07},
    "Black": {"Democrat": 0.62, "Republican": 0.07, "Independent": 0.24, "Other": 0.07},
    "Asian": {"Democrat": 0.38, "Republican": 0.17, "Independent": 0.36, "Other": 0.09},
    "Hispanic": {"Democrat": 0.38, "Republican": 0.19, "Independent": 0.34, "Other": 0.09},
    "Other": {"Democrat": 0.30, "Republican": 0.25, "Independent": 0.35, "Other": 0.10},
}
# Younger adults lean independent, older adults Republican; degree holders lean Democratic [PEW-COAL].
PARTY_FACTORS_BY_AGE: Table = {
    "18-29": {"Independent": 1.3, "Republican": 0.8},
    "65+": {"Republican": 1.15, "Independent": 0.8},
}
PARTY_FACTORS_BY_EDUCATION: Table = {
    "Less than high school": {"Democrat": 0.9, "Republican": 1.1},
    "High school graduate": {"Democrat": 0.9, "Republican": 1.15},
    "College graduate/some postgrad": {"Democrat": 1.15, "Republican": 0.9},
    "Postgraduate": {"Democrat": 1.35, "Republican": 0.75},
}
# White evangelical and other Protestants lean Republican, the unaffiliated and Jewish Americans Democratic [PEW-COAL].
PARTY_FACTORS_BY_RELIGION: Table = {
    "Protestant": {"Democrat": 0.9, "Republican": 1.25},
    "Unaffiliated": {"Democrat": 1.3, "Republican": 0.6},
    "Jewish": {"Democrat": 1.6, "Republican": 0.6},
    "Muslim": {"Democrat": 1.4, "Republican": 0.5},
}

# Ideology within each party [PEW-COAL]: about half of Democrats call themselves liberal, about two-thirds of
# Republicans conservative; independents are mostly moderate.
IDEOLOGY_BY_PARTY: Table = {
    "Democrat": {"Very liberal": 0.17, "Liberal": 0.33, "Moderate": 0.38, "Conservative": 0.10,
                 "Very conservative": 0.02},
    "Republican": {"Very liberal": 0.01, "Liberal": 0.04, "Moderate": 0.27, "Conservative": 0.45,
                   "Very conservative": 0.23},
    "Independent": {"Very liberal": 0.06, "Liberal": 0.16, "Moderate": 0.50, "Conservative": 0.20,
                    "Very conservative": 0.08},
    "Other": {"Very liberal": 0.08, "Liberal": 0.15, "Moderate": 0.45, "Conservative": 0.20,
              "Very conservative": 0.12},
}
# Within a party, the religiously unaffiliated sit further left and Protestants further right [PEW-COAL].
IDEOLOGY_FACTORS_BY_RELIGION: Table = {
    "Unaffiliated": {"Very liberal": 1.3, "Liberal": 1.3},
    "Protestant": {"Conservative": 1.15, "Very conservative": 1.15},
}
