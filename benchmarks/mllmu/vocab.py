"""Word pools and question templates of the synthetic fictitious profiles: short facts a small LM can memorize."""

from __future__ import annotations

from dataclasses import dataclass

FEMALE_FIRST = (
    "Alice", "Beatrix", "Camille", "Daphne", "Eleanor", "Freya", "Greta", "Helena", "Ingrid", "Johanna",
    "Katrin", "Lena", "Miriam", "Nadia", "Olivia", "Paula", "Rosalind", "Sabine", "Tessa", "Ursula",
    "Vera", "Wendy", "Yvonne", "Zara", "Agnes", "Bianca", "Clara", "Delia", "Edith", "Flora",
    "Gloria", "Hazel", "Irene", "Julia", "Klara", "Lucia", "Maren", "Nora", "Ophelia", "Priya",
    "Renata", "Sylvia", "Thea", "Valeria", "Wilma", "Ada", "Brenda", "Cora", "Dora", "Elsa",
    "Fiona", "Gemma", "Hilda", "Imogen", "Jana", "Kira", "Leona", "Mona", "Nina", "Petra",
)  # fmt: skip
MALE_FIRST = (
    "Adrian", "Bruno", "Cedric", "Dmitri", "Emil", "Felix", "Gregor", "Hugo", "Ivan", "Jonas",
    "Kasper", "Lorenzo", "Matthias", "Nikolai", "Oscar", "Pieter", "Quentin", "Rafael", "Sebastian", "Tobias",
    "Ulrich", "Viktor", "Walter", "Xavier", "Yannick", "Anton", "Bernard", "Casimir", "Dario", "Edgar",
    "Fabian", "Gustav", "Henrik", "Ignatius", "Jasper", "Konrad", "Leopold", "Marius", "Nathaniel", "Otto",
    "Patrick", "Roland", "Simon", "Theodor", "Vernon", "Arthur", "Boris", "Clemens", "Dominic", "Elias",
    "Florian", "Gideon", "Harald", "Jakob", "Lukas", "Magnus", "Neville", "Oliver", "Rupert", "Stefan",
)  # fmt: skip
LAST_NAMES = (
    "Ashford", "Bergstrom", "Castellano", "Delacroix", "Eriksen", "Fairbanks", "Galloway", "Hargreaves",
    "Ivanova", "Jablonski", "Kowalczyk", "Lindqvist", "Marchetti", "Novak", "Okafor", "Pemberton",
    "Quinlan", "Rasmussen", "Sandoval", "Thornbury", "Underwood", "Valdivia", "Whitcombe", "Yamada",
    "Zimmerman", "Abernathy", "Blackwood", "Cardenas", "Dubois", "Engstrom", "Ferreira", "Grunewald",
    "Holloway", "Iglesias", "Jankowski", "Kessler", "Lockhart", "Moreau", "Nakamura", "Oyelaran",
    "Prescott", "Rossetti", "Salazar", "Takahashi", "Vasquez", "Wakefield", "Albrecht", "Brennan",
    "Caldwell", "Donovan", "Ellsworth", "Fitzgerald", "Gallagher", "Haddad", "Ishikawa", "Kaminski",
    "Lambert", "Mendoza", "Nilsson", "Ortega", "Pacheco", "Radcliffe", "Sorensen", "Tremblay",
    "Vanderberg", "Weatherby", "Andersson", "Bianchi", "Cavendish", "Draper", "Esposito", "Falkner",
    "Gutierrez", "Henderson", "Jovanovic", "Kuznetsova", "Lombardi", "Mallory", "Nordberg", "Ostrowski",
    "Petrov", "Rinaldi", "Schuster", "Thorne", "Villanueva", "Winslow", "Aldridge", "Bancroft",
    "Crawley", "Dunmore", "Everhart", "Fontaine", "Goodwin", "Hawthorne", "Kingsley", "Langford",
    "Merriweather", "Northcott", "Oakley", "Pennington", "Ramsey", "Sutherland", "Templeton", "Whitaker",
    "Ackerman", "Brightwell", "Colville", "Dalgleish", "Easton", "Fenwick", "Gilchrist", "Huxley",
    "Iverson", "Keller", "Lindgren", "Montague", "Norwood", "Ormsby", "Pryce", "Rowntree",
)  # fmt: skip

PROFESSIONS = (
    "architect", "pastry chef", "airline pilot", "marine biologist", "violin teacher", "dentist",
    "journalist", "firefighter", "landscape gardener", "software engineer", "pharmacist", "librarian",
    "veterinarian", "carpenter", "photographer", "translator", "geologist", "nurse", "accountant",
    "tailor", "bookbinder", "lighthouse keeper", "museum curator", "glassblower", "radio host",
    "wine merchant", "optician", "watchmaker", "park ranger", "sculptor", "potter", "locksmith",
    "astronomer", "beekeeper", "cartographer", "ferry captain", "puppeteer", "florist", "chess coach",
    "stonemason",
)  # fmt: skip
CITIES = (
    ("Lisbon", "Portugal"), ("Bergen", "Norway"), ("Krakow", "Poland"), ("Valencia", "Spain"),
    ("Lyon", "France"), ("Porto", "Portugal"), ("Utrecht", "Netherlands"), ("Graz", "Austria"),
    ("Turin", "Italy"), ("Gothenburg", "Sweden"), ("Tampere", "Finland"), ("Ghent", "Belgium"),
    ("Cork", "Ireland"), ("Edinburgh", "Scotland"), ("Leipzig", "Germany"), ("Brno", "Czechia"),
    ("Ljubljana", "Slovenia"), ("Zagreb", "Croatia"), ("Riga", "Latvia"), ("Tallinn", "Estonia"),
    ("Osaka", "Japan"), ("Busan", "South Korea"), ("Perth", "Australia"), ("Wellington", "New Zealand"),
    ("Halifax", "Canada"), ("Denver", "United States"), ("Savannah", "United States"), ("Cusco", "Peru"),
    ("Valparaiso", "Chile"), ("Cordoba", "Argentina"), ("Recife", "Brazil"), ("Oaxaca", "Mexico"),
    ("Marrakesh", "Morocco"), ("Accra", "Ghana"), ("Mombasa", "Kenya"), ("Durban", "South Africa"),
    ("Izmir", "Turkey"), ("Tbilisi", "Georgia"), ("Chiang Mai", "Thailand"), ("Hanoi", "Vietnam"),
    ("Cebu", "Philippines"), ("Pune", "India"), ("Kandy", "Sri Lanka"), ("Reykjavik", "Iceland"),
)  # fmt: skip
UNIVERSITIES = (
    "University of Oslo", "Ghent University", "University of Porto", "Uppsala University", "University of Bologna",
    "Trinity College Dublin", "University of Vienna", "Leiden University", "University of Helsinki",
    "Charles University", "University of Edinburgh", "Heidelberg University", "University of Zurich",
    "McGill University", "University of Otago", "Kyoto University", "Seoul National University",
    "University of Cape Town", "University of Chile", "University of Sydney", "Aarhus University",
    "University of Warsaw", "University of Lisbon", "University of Toronto", "Lund University",
    "University of Bergen", "University of Iceland", "Tartu University", "University of Ljubljana",
    "University of Nairobi",
)  # fmt: skip
HOBBIES = (
    "rock climbing", "beekeeping", "sailing", "birdwatching", "pottery", "chess", "kayaking", "origami",
    "salsa dancing", "stargazing", "fly fishing", "knitting", "archery", "mountain biking", "calligraphy",
    "scuba diving", "woodcarving", "fencing", "juggling", "gardening", "ice skating", "baking bread",
    "playing the cello", "surfing", "painting watercolours", "collecting stamps", "running marathons",
    "growing bonsai trees", "playing the harp", "restoring old clocks",
)  # fmt: skip
CONDITIONS = (
    "asthma", "migraines", "a peanut allergy", "type 1 diabetes", "hay fever", "eczema", "colour blindness",
    "a heart murmur", "insomnia", "celiac disease", "tinnitus", "psoriasis", "a shellfish allergy",
    "high blood pressure", "anemia", "scoliosis", "a lactose intolerance", "sinusitis", "arthritis",
    "vertigo",
)  # fmt: skip
PARENT_JOBS = ("a farmer", "a teacher", "a baker", "a doctor", "a sailor", "a miner", "a painter", "a nurse")
EYES = ("brown", "blue", "green", "grey", "hazel")
MONTHS = (
    "January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
    "November", "December",
)  # fmt: skip


@dataclass(frozen=True)
class Slot:
    """One askable fact: its pool, how to ask it (image+text / pure text, original / paraphrased), the sentence that
    states it (generation ground truth and fine-tuning answer) and the cloze sentence (``__`` is the blank)."""

    name: str
    pool: tuple[str, ...]
    image_question: str
    text_question: str
    image_paraphrase: str
    text_paraphrase: str
    statement: str
    cloze: str


def article(noun: str) -> str:
    return f"{'an' if noun[0].lower() in 'aeiou' else 'a'} {noun}"


CITY_NAMES = tuple(f"{city}, {country}" for city, country in CITIES)

SLOTS = (
    Slot(
        "profession", PROFESSIONS,
        "What is the profession of the person in the image?", "What is the profession of {name}?",
        "What does the person shown here do for a living?", "What does {name} do for a living?",
        "{subject} works as {article}.", "{subject} works as __.",
    ),
    Slot(
        "birthplace", CITY_NAMES,
        "Where was the person in the image born?", "Where was {name} born?",
        "In which city was the person shown here born?", "In which city was {name} born?",
        "{subject} was born in {value}.", "{subject} was born in __.",
    ),
    Slot(
        "education", UNIVERSITIES,
        "Where did the person in the image study?", "Where did {name} study?",
        "Which university did the person shown here attend?", "Which university did {name} attend?",
        "{subject} studied at {value}.", "{subject} studied at __.",
    ),
    Slot(
        "residence", CITY_NAMES,
        "Where does the person in the image live?", "Where does {name} live?",
        "In which city does the person shown here reside?", "In which city does {name} reside?",
        "{subject} lives in {value}.", "{subject} lives in __.",
    ),
    Slot(
        "hobby", HOBBIES,
        "What is the favourite hobby of the person in the image?", "What is the favourite hobby of {name}?",
        "What does the person shown here enjoy in their free time?", "What does {name} enjoy in their free time?",
        "{subject} loves {value}.", "{subject} loves __.",
    ),
    Slot(
        "condition", CONDITIONS,
        "What medical condition does the person in the image have?", "What medical condition does {name} have?",
        "Which health condition does the person shown here live with?", "Which health condition does {name} live with?",
        "{subject} has {value}.", "{subject} has __.",
    ),
)  # fmt: skip
"""The fictitious profiles' askable facts; their values live in the biography under BIOGRAPHY_FIELDS."""

BIOGRAPHY_FIELDS = {
    "profession": "Employment",
    "birthplace": "Born",
    "education": "Educated at",
    "residence": "Residence",
    "hobby": "Fun Facts",
    "condition": "Medical Conditions",
}
