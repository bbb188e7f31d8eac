"""Real public figures for the synthetic celebrity set (the hub's ``Retain_Set``): widely known text facts.

Ordered by how reliably SmolLM2-135M-Instruct knows them, checked with the real model on the reference
multiple-choice prompt by the summed log-probability of each option's text (the outcome: docs/demo.md). The first
``n_celebrities`` are used.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Celebrity:
    name: str
    gender: str
    born: str
    date_of_birth: str
    profession: str
    country: str
    known_for: str


CELEBRITIES = (
    Celebrity(
        "William Shakespeare",
        "Male",
        "Stratford-upon-Avon, England",
        "April 1564",
        "playwright",
        "England",
        "writing Romeo and Juliet",
    ),
    Celebrity(
        "Leonardo da Vinci",
        "Male",
        "Vinci, Italy",
        "April 15, 1452",
        "painter",
        "Italy",
        "painting the Mona Lisa",
    ),
    Celebrity(
        "Isaac Newton",
        "Male",
        "Woolsthorpe, England",
        "January 4, 1643",
        "physicist",
        "England",
        "the laws of motion and universal gravitation",
    ),
    Celebrity(
        "Wolfgang Amadeus Mozart",
        "Male",
        "Salzburg, Austria",
        "January 27, 1756",
        "composer",
        "Austria",
        "composing The Magic Flute",
    ),
    Celebrity(
        "Pablo Picasso", "Male", "Malaga, Spain", "October 25, 1881", "painter", "Spain", "co-founding Cubism"
    ),
    Celebrity(
        "Ludwig van Beethoven",
        "Male",
        "Bonn, Germany",
        "December 1770",
        "composer",
        "Germany",
        "composing the Ninth Symphony",
    ),
    Celebrity(
        "Taylor Swift",
        "Female",
        "West Reading, Pennsylvania, United States",
        "December 13, 1989",
        "singer",
        "the United States",
        "her pop and country albums",
    ),
    Celebrity(
        "Albert Einstein",
        "Male",
        "Ulm, Germany",
        "March 14, 1879",
        "physicist",
        "Germany",
        "the theory of relativity",
    ),
    Celebrity(
        "Barack Obama",
        "Male",
        "Honolulu, Hawaii, United States",
        "August 4, 1961",
        "politician",
        "the United States",
        "being the 44th President of the United States",
    ),
    Celebrity(
        "Cristiano Ronaldo",
        "Male",
        "Funchal, Portugal",
        "February 5, 1985",
        "footballer",
        "Portugal",
        "scoring goals for Real Madrid and Manchester United",
    ),
    Celebrity(
        "Marie Curie",
        "Female",
        "Warsaw, Poland",
        "November 7, 1867",
        "chemist",
        "Poland",
        "her research on radioactivity",
    ),
    Celebrity(
        "Bill Gates",
        "Male",
        "Seattle, Washington, United States",
        "October 28, 1955",
        "businessman",
        "the United States",
        "co-founding Microsoft",
    ),
    Celebrity(
        "Lionel Messi",
        "Male",
        "Rosario, Argentina",
        "June 24, 1987",
        "footballer",
        "Argentina",
        "playing for FC Barcelona",
    ),
    Celebrity(
        "Mahatma Gandhi",
        "Male",
        "Porbandar, India",
        "October 2, 1869",
        "lawyer",
        "India",
        "leading India's nonviolent independence movement",
    ),
    Celebrity(
        "Nelson Mandela",
        "Male",
        "Mvezo, South Africa",
        "July 18, 1918",
        "politician",
        "South Africa",
        "being the first Black President of South Africa",
    ),
    Celebrity(
        "Charles Darwin",
        "Male",
        "Shrewsbury, England",
        "February 12, 1809",
        "naturalist",
        "England",
        "the theory of evolution by natural selection",
    ),
    Celebrity(
        "Vincent van Gogh",
        "Male",
        "Zundert, Netherlands",
        "March 30, 1853",
        "painter",
        "the Netherlands",
        "painting The Starry Night",
    ),
    Celebrity(
        "Michael Jordan",
        "Male",
        "Brooklyn, New York, United States",
        "February 17, 1963",
        "basketball player",
        "the United States",
        "winning six NBA titles with the Chicago Bulls",
    ),
    Celebrity(
        "Steve Jobs",
        "Male",
        "San Francisco, California, United States",
        "February 24, 1955",
        "businessman",
        "the United States",
        "co-founding Apple",
    ),
    Celebrity(
        "Usain Bolt",
        "Male",
        "Sherwood Content, Jamaica",
        "August 21, 1986",
        "sprinter",
        "Jamaica",
        "holding the 100 metres world record",
    ),
)

CELEBRITY_NAME_PARTS = frozenset(part for c in CELEBRITIES for part in c.name.replace("-", " ").split())
"""Every word of every celebrity name: fictitious names never reuse one."""

EXTRA_PROFESSIONS = ("astronaut", "chef", "architect", "novelist", "actor", "poet", "economist", "surgeon")
EXTRA_COUNTRIES = ("Canada", "Brazil", "Japan", "Russia", "Sweden", "Egypt", "Mexico", "China")
