"""Word lists for personas: invented people, ordinary jobs and places, plain statements of values.

Names are common first names and surnames combined at random, so no list entry describes a real person; a few
combinations that would name a famous person are refused in `personas`. Value statements describe what people
of each ideology and faith commonly say they care about, in their own terms, not what opponents say of them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class NamePool:
    """Given names and surnames that go together (one heritage), so a persona's full name is plausible."""

    male: tuple[str, ...]
    female: tuple[str, ...]
    surnames: tuple[str, ...]


NAME_POOLS: dict[str, tuple[NamePool, ...]] = {
    "White": (
        NamePool(
            male=("James", "Michael", "Robert", "David", "William", "Thomas", "Daniel", "Matthew", "Ryan", "Kevin",
                  "Brian", "Scott", "Kyle", "Tyler", "Greg", "Dale"),
            female=("Jennifer", "Sarah", "Jessica", "Emily", "Ashley", "Karen", "Linda", "Megan", "Rachel", "Amanda",
                    "Heather", "Laura", "Susan", "Hannah", "Kristen", "Brenda"),
            surnames=("Miller", "Anderson", "Olson", "Schmidt", "Murphy", "Baker", "Cooper", "Hughes", "Sullivan",
                      "Becker", "Walsh", "Foster", "Reed", "Larson", "Kowalski", "Novak"),
        ),
    ),
    "Black": (
        NamePool(
            male=("Marcus", "Andre", "Darnell", "Terrence", "Jamal", "Curtis", "Reginald", "Malik", "Cedric",
                  "Derrick", "Isaiah", "Xavier"),
            female=("Keisha", "Tamika", "Aaliyah", "Latoya", "Monique", "Ebony", "Jasmine", "Denise", "Imani",
                    "Shanice", "Gloria", "Tiana"),
            surnames=("Robinson", "Harris", "Coleman", "Jenkins", "Banks", "Simmons", "Freeman", "Boyd", "Mitchell",
                      "Dawson", "Brooks", "Gaines"),
        ),
    ),
    "Hispanic": (
        NamePool(
            male=("Jose", "Luis", "Carlos", "Miguel", "Juan", "Alejandro", "Diego", "Javier", "Ricardo", "Eduardo",
                  "Mateo", "Roberto"),
            female=("Maria", "Ana", "Gabriela", "Lucia", "Rosa", "Daniela", "Veronica", "Carmen", "Isabel",
                    "Adriana", "Sofia", "Yesenia"),
            surnames=("Garcia", "Rodriguez", "Martinez", "Hernandez", "Lopez", "Gonzalez", "Perez", "Ramirez",
                      "Torres", "Flores", "Rivera", "Morales", "Castillo", "Ortiz"),
        ),
    ),
    # The largest Asian American origin groups: Chinese, Indian, Filipino, Vietnamese, Korean, Japanese.
    "Asian": (
        NamePool(male=("Wei", "Jason", "Kevin", "Andrew", "Jun"), female=("Mei", "Grace", "Michelle", "Jenny", "Lin"),
                 surnames=("Chen", "Wang", "Huang", "Li", "Zhang")),
        NamePool(male=("Raj", "Sanjay", "Arjun", "Vikram", "Rohan"),
                 female=("Priya", "Anjali", "Ananya", "Deepa", "Kavya"), surnames=("Patel", "Shah", "Reddy", "Iyer")),
        NamePool(male=("Paolo", "Jose", "Mark", "Ramon"), female=("Maricel", "Joy", "Rowena", "Cristina"),
                 surnames=("Santos", "Reyes", "Cruz", "Bautista")),
        NamePool(male=("Minh", "Tuan", "Huy", "Khoa"), female=("Linh", "Thao", "Ngoc", "Vy"),
                 surnames=("Nguyen", "Tran", "Pham", "Le")),
        NamePool(male=("Min-jun", "Daniel", "Sung"), female=("Soo-jin", "Ji-yeon", "Esther"),
                 surnames=("Kim", "Park", "Choi")),
        NamePool(male=("Hiroshi", "Kenji", "Ryan"), female=("Yuki", "Naomi", "Emi"),
                 surnames=("Nakamura", "Tanaka", "Yamamoto")),
    ),
    # Native American, Pacific Islander and multiracial Americans.
    "Other": (
        NamePool(male=("Elijah", "Cody", "Dakota", "Travis"), female=("Cheyenne", "Autumn", "Skye", "Savannah"),
                 surnames=("Begay", "Yazzie", "Locklear", "Oxendine")),
        NamePool(male=("Keoni", "Kai", "Makoa"), female=("Leilani", "Kiana", "Malia"),
                 surnames=("Kahale", "Akana", "Fonoti")),
        NamePool(male=("Aiden", "Noah", "Adrian", "Mason"), female=("Maya", "Nia", "Tessa", "Layla"),
                 surnames=("Silva", "Morgan", "Bennett", "Carter", "Ellis")),
    ),
}
# Used for Muslim personas more often than not: many Muslim Americans have Arab or South Asian names.
MUSLIM_NAMES = NamePool(
    male=("Omar", "Yusuf", "Ahmed", "Khalid", "Amir", "Tariq", "Hamza", "Bilal"),
    female=("Layla", "Fatima", "Noor", "Amina", "Yasmin", "Sara", "Mariam", "Zainab"),
    surnames=("Haddad", "Khan", "Rahman", "Saleh", "Abdullah", "Hassan", "Qureshi", "Mansour"),
)
# Used for some White Jewish personas' surnames.
JEWISH_SURNAMES = ("Cohen", "Levine", "Goldberg", "Katz", "Friedman", "Shapiro", "Rosen", "Weiss")

# Full names that belong to well-known public figures; a persona drawing one re-draws.
FAMOUS_NAMES = frozenset({
    "Michael Jackson", "Michael Cohen", "Kevin Kim", "David Cohen", "Robert Miller", "Jose Ramirez",
    "Carlos Santana", "Jason Kim", "Andrew Kim", "Daniel Kim", "Scott Baker", "Emily Baker", "Grace Park",
    "Michelle Kim", "Kevin Nguyen", "Wei Chen", "Naomi Tanaka", "Jose Cruz", "Mark Santos",
})

# Education tiers, so that an occupation fits the degree it usually requires.
EDUCATION_TIER: dict[str, str] = {
    "Less than high school": "none",
    "High school graduate": "high school",
    "Some college, no degree": "some college",
    "Associate's degree": "some college",
    "College graduate/some postgrad": "bachelor",
    "Postgraduate": "graduate",
}
# Household income tiers; the occupation is the persona's own job, the income is the household's.
INCOME_TIER: dict[str, str] = {
    "Less than $30,000": "low",
    "$30,000-$50,000": "low",
    "$50,000-$75,000": "middle",
    "$75,000-$100,000": "middle",
    "$100,000 or more": "high",
}

OCCUPATIONS: dict[str, dict[str, tuple[str, ...]]] = {
    "none": {
        "low": ("line cook", "housekeeper", "farmworker", "home health aide", "landscaping laborer", "dishwasher"),
        "middle": ("construction laborer", "warehouse worker", "roofer", "forklift operator",
                   "meatpacking plant worker"),
        "high": ("roofing contractor", "oil field worker", "long-haul truck driver", "small restaurant owner"),
    },
    "high school": {
        "low": ("cashier", "retail sales associate", "janitor", "fast-food shift manager", "childcare worker",
                "security guard"),
        "middle": ("truck driver", "machinist", "auto mechanic", "bank teller", "postal carrier",
                   "correctional officer"),
        "high": ("union electrician", "police officer", "plumbing contractor", "railroad conductor",
                 "insurance sales agent"),
    },
    "some college": {
        "low": ("pharmacy technician", "call center representative", "medical assistant", "administrative assistant",
                "preschool teacher"),
        "middle": ("licensed practical nurse", "dental hygienist", "HVAC technician", "paralegal",
                   "IT support specialist", "firefighter"),
        "high": ("registered nurse", "real estate agent", "electrical lineworker", "sales manager",
                 "radiology technician"),
    },
    "bachelor": {
        "low": ("substitute teacher", "nonprofit program coordinator", "freelance graphic designer", "social worker"),
        "middle": ("elementary school teacher", "accountant", "marketing specialist", "human resources specialist",
                   "newspaper reporter"),
        "high": ("software developer", "financial analyst", "civil engineer", "sales director",
                 "pharmaceutical sales representative"),
    },
    "graduate": {
        "low": ("graduate student", "adjunct instructor", "museum educator", "research assistant"),
        "middle": ("high school teacher", "librarian", "mental health counselor", "speech-language pathologist"),
        "high": ("physician", "attorney", "university professor", "engineering manager", "pharmacist",
                 "physical therapist"),
    },
}
STUDENT_POSTS = ("graduate student", "research assistant")
STUDENT_JOBS = ("a coffee shop", "a grocery store", "the campus library", "a restaurant", "a gym")

PLACES: dict[str, tuple[str, ...]] = {
    "Northeast": ("Worcester, Massachusetts", "Scranton, Pennsylvania", "Albany, New York", "Hartford, Connecticut",
                  "Portland, Maine", "Newark, New Jersey", "Pittsburgh, Pennsylvania", "Providence, Rhode Island",
                  "Burlington, Vermont", "Syracuse, New York", "Allentown, Pennsylvania", "Manchester, New Hampshire"),
    "Midwest": ("Columbus, Ohio", "Grand Rapids, Michigan", "Des Moines, Iowa", "Milwaukee, Wisconsin",
                "Omaha, Nebraska", "Indianapolis, Indiana", "Wichita, Kansas", "Toledo, Ohio", "Madison, Wisconsin",
                "Springfield, Missouri", "Fargo, North Dakota", "Duluth, Minnesota"),
    "South": ("San Antonio, Texas", "Atlanta, Georgia", "Charlotte, North Carolina", "Birmingham, Alabama",
              "Memphis, Tennessee", "Jacksonville, Florida", "Louisville, Kentucky", "Richmond, Virginia",
              "Tulsa, Oklahoma", "Baton Rouge, Louisiana", "El Paso, Texas", "Knoxville, Tennessee",
              "Columbia, South Carolina", "Little Rock, Arkansas"),
    "West": ("Phoenix, Arizona", "Tucson, Arizona", "Sacramento, California", "Fresno, California",
             "Denver, Colorado", "Boise, Idaho", "Spokane, Washington", "Albuquerque, New Mexico",
             "Salt Lake City, Utah", "Las Vegas, Nevada", "Portland, Oregon", "Billings, Montana",
             "Riverside, California", "Anchorage, Alaska"),
}

LIFE_STAGES: dict[str, tuple[str, ...]] = {
    "young": ("You share an apartment with two roommates.", "You live with your parents while you save money.",
              "You recently moved in with your partner.", "You are newly married and rent a small place.",
              "You are a single parent of a toddler."),
    "middle": ("You are married with two school-age kids.", "You are divorced and share custody of your son.",
               "You live with your partner and have no children.", "You are raising three kids with your spouse.",
               "You are single and own a small house."),
    "older": ("Your two children are grown and you live with your spouse.",
              "You care for an aging parent who lives with you.",
              "You are divorced and recently became a grandparent.",
              "You and your spouse are starting to plan for retirement.",
              "You live alone and stay close to your siblings."),
    "senior": ("You are widowed and have four grandchildren.", "You live with your spouse of forty years.",
               "You live alone, near your daughter's family.", "You and your spouse help raise your grandchildren.",
               "You volunteer several days a week at a food bank."),
}

EDUCATION_PHRASES: dict[str, str] = {
    "Less than high school": "You left high school before graduating",
    "High school graduate": "You finished high school",
    "Some college, no degree": "You took some college classes but did not finish a degree",
    "Associate's degree": "You earned an associate's degree at a community college",
    "College graduate/some postgrad": "You have a bachelor's degree",
    "Postgraduate": "You hold a graduate degree",
}
INCOME_PHRASES: dict[str, str] = {
    "Less than $30,000": "money is often tight in your household",
    "$30,000-$50,000": "your household gets by but watches every expense",
    "$50,000-$75,000": "your household earns a modest middle-class income",
    "$75,000-$100,000": "your household is comfortably middle class",
    "$100,000 or more": "your household is financially comfortable",
}

IDEOLOGY_VALUES: dict[str, tuple[str, ...]] = {
    "Very liberal": (
        "You believe government should act boldly to reduce inequality, guarantee health care and confront climate "
        "change.",
        "You care deeply about racial and economic justice and think the system needs big changes, not small fixes.",
    ),
    "Liberal": (
        "You think government has a real role in helping people get ahead, and you value diversity, science and a "
        "strong safety net.",
        "You favor steady reform on health care, the environment and civil rights, and you take expert advice "
        "seriously.",
    ),
    "Moderate": (
        "You judge issues case by case, distrust the extremes of both parties and like practical compromises.",
        "You hold a mix of views, some traditional and some progressive, and care most about what actually works.",
    ),
    "Conservative": (
        "You value personal responsibility, free enterprise and strong families, and you are wary of government "
        "overreach.",
        "You believe in limited government, lower taxes and respect for tradition, and you prefer change to come "
        "slowly.",
    ),
    "Very conservative": (
        "You hold firmly to traditional values and want a much smaller federal government, secure borders and strong "
        "protection of gun rights.",
        "You believe the country has drifted from its founding principles and that family, hard work and "
        "self-reliance should come first.",
    ),
}

RELIGION_VALUES: dict[str, tuple[str, ...]] = {
    "Protestant": ("Your church community and Christian faith are an important part of your week.",
                   "You were raised Protestant, and your faith still guides how you treat people."),
    "Roman Catholic": ("You are Catholic and go to Mass when you can; your parish matters to you.",
                       "You grew up Catholic, and the Church's teaching on caring for the poor stays with you."),
    "Unaffiliated": ("You are not religious and ground your ethics in fairness and your own experience.",
                     "You do not belong to any religion, though you respect people who do."),
    "Jewish": ("You are Jewish, and your family's traditions and the duty to repair the world matter to you.",
               "You are Jewish and active in your synagogue's community service projects."),
    "Muslim": ("You are Muslim, and your mosque community is an important part of your life.",
               "You are Muslim; prayer and charity are part of your everyday routine."),
    "Other": ("You practice a faith outside the largest traditions, and it shapes your sense of duty to others.",
              "Your faith is personal and important to you, though few of your neighbors share it."),
}

PARTY_VALUES: dict[str, str] = {
    "Democrat": "You usually vote for Democrats.",
    "Republican": "You usually vote for Republicans.",
    "Independent": "You consider yourself an independent and have voted for candidates of both parties.",
    "Other": "You do not identify with either major party.",
}
