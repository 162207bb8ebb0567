"""What the buyer says: its phrasings per intent and tone, and the `Output:` line.

The buyer has several phrasings for each intent (a terse set for uncommunicative
buyers), a greeting, and openers and closers in its personality's tone, all drawn with
the episode's generator. Lines are built only from these templates, catalog names and
the buyer's own numbers, never from the seller's words, so a seller cannot put an
`Output:` line into the buyer's turn. The small grammar helpers (articles, type nouns,
lists, money) serve the scripted sellers too.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from lmrl_ray.envs.car_dealer.persona import pick

# -- Wording shared with the sellers ------------------------------------------------------


def money(amount: float) -> str:
    """`$35,000`."""
    return f"${int(amount):,}"


def output_line(accepted: bool, msrp: int, price: int | None = None) -> str:
    """The buyer's last line, its amounts with thousands commas as the original's data
    writes them (llm_rl_scripts/car_dealer/env/data.py:246-248)."""
    if accepted:
        return f"Output: Decision=Accept MSRP={money(msrp)} Buy Price={money(price)}"
    return f"Output: Decision=Reject MSRP={money(msrp)}"


def article(phrase: str) -> str:
    """The phrase with its article: "a Toyota SUV", "an SUV"."""
    return ("an " if phrase[:1].lower() in "aeiou" or phrase.startswith("SUV") else "a ") + phrase


_TYPE_NOUN = {"luxury": "luxury car", "electric": "electric car"}


def type_noun(car_type: str) -> str:
    """A car type as a noun: "SUV", "luxury car"."""
    return _TYPE_NOUN.get(car_type, car_type)


def join(items: Sequence[str]) -> str:
    """The items as prose: "a, b and c"."""
    items = list(items)
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


_FEATURE_NOUN = {"backup camera": "a backup camera", "navigation system": "a navigation system",
                 "sunroof": "a sunroof"}


def feature_phrase(feature: str) -> str:
    """A feature as it is said after "has": "a sunroof", "heated seats"."""
    return _FEATURE_NOUN.get(feature, feature)


def _capitalized(text: str) -> str:
    return text[:1].upper() + text[1:]


def fill(template: str, **slots: Any) -> str:
    """`template` with its slots filled; a capitalised slot ({Car}) takes the value capitalised."""
    return template.format(**{**slots, **{_capitalized(k): _capitalized(str(v)) for k, v in slots.items()}})


# -- What the buyer says ----------------------------------------------------------------
# Every line is printable ASCII (the environment's observation space). Tone lines must not
# name a brand, type, feature or amount, and the buyer never says "budget" or "spend" next
# to an amount except when it states its budget: the scripted sellers rely on that.

_GREETINGS = {
    "polite": ("Good afternoon!", "Hello, nice to meet you.", "Hi there, thank you for seeing me."),
    "respectful": ("Hello.", "Good day to you.", "Hello, thanks for your time."),
    "talkative": ("Hi there! What a lovely day for shopping, right?", "Hello hello! I've been looking forward to this.",
                  "Oh hi! I finally made it over here."),
    "sarcastic": ("Well, here I am at a dealership. Thrilling.", "Oh good, a salesperson.",
                  "Ah, my favorite way to spend a Saturday."),
    "uncommunicative": ("Hi.", "Hey.", ""),
    "rude": ("Yeah, hi.", "Let's make this quick.", "Skip the small talk."),
    "angry": ("I've already wasted my morning at two other lots.", "Finally, somebody shows up.",
              "I'm in a bad mood, so keep it short."),
    "insulting": ("You look like you started here yesterday.", "I hope you know more than the last guy.",
                  "Let's see if you're any good at this."),
    "toxic": ("Ugh, another dealership.", "Let's get this over with.", "I already hate this place."),
    "abusive": ("Hey, you. Pay attention.", "Listen up, salesman.", "Don't just stand there."),
}
_OPENERS = {
    "polite": ("Thank you.", "Certainly.", "Of course.", "That's kind of you."),
    "respectful": ("I understand.", "Alright.", "Fair enough.", "I see."),
    "talkative": ("Oh, okay!", "Well, let me tell you.", "Oh, where do I start?", "Ha, okay!"),
    "sarcastic": ("Oh, wonderful.", "Wow, what a surprise.", "Well, isn't that something.", "Oh, brilliant."),
    "uncommunicative": (),
    "rude": ("Look,", "Ugh.", "Listen.", "Whatever."),
    "angry": ("I'm losing my patience here.", "Seriously?", "Come on!", "Unbelievable."),
    "insulting": ("Do you even know what you're selling?", "Wow, you're not good at this.", "Try to keep up."),
    "toxic": ("Whatever.", "This place is a joke.", "Typical."),
    "abusive": ("Are you deaf?", "Pay attention!", "Are you even listening?"),
}
_CLOSERS = {
    "polite": ("Thank you.", "I appreciate your help.", "Thanks so much."),
    "respectful": ("I hope that helps.", "Thanks for your time.", "I appreciate it."),
    "talkative": ("My neighbor just bought one and loves it, by the way.", "I've been reading reviews all week.",
                  "Sorry, I do go on.", "My cousin says I should drive a hard bargain."),
    "sarcastic": ("Shocking, I know.", "Truly groundbreaking.", "What a time to be alive."),
    "uncommunicative": (),
    "rude": ("Hurry up.", "Don't waste my time.", "Chop chop."),
    "angry": ("This is so frustrating!", "Get it together!", "I'm fed up."),
    "insulting": ("Even a child could follow this.", "Try using your brain.", "Amateur."),
    "toxic": ("Typical dealer nonsense.", "You people are all the same.", "What a joke."),
    "abusive": ("Stop being useless.", "Do your job properly.", "Pathetic."),
}
_OPENER_P = {"talkative": 0.6, "uncommunicative": 0.0, "polite": 0.5, "respectful": 0.5}
_CLOSER_P = {"talkative": 0.5, "uncommunicative": 0.0}

# intent -> (phrasings, terse phrasings for uncommunicative buyers)
_LINES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "wish": (("I'm looking for {car}.", "I want to buy {car}.", "I'm shopping for {car}.", "I need {car}.",
              "I'm after {car}."),
             ("Looking for {car}.", "{Car}.")),
    "wish_feature": (("It should have {features}.", "I'd like {features}.", "{Features} would be nice.",
                      "I really want {features}."),
                     ("With {features}.",)),
    "answer_car": (("I want {car}.", "I'm after {car}.", "What I'd like is {car}.", "Ideally {car}."),
                   ("{Car}.",)),
    "answer_features": (("It has to have {features}.", "I need {features}.", "Must have {features}.",
                         "I'd want {features} in it."),
                        ("{Features}.",)),
    "no_more_features": (("That's everything on my list.", "Nothing else, that's all I need.",
                          "That covers it, nothing more."),
                         ("That's all.",)),
    "repeat_wish": (("I already told you: {car}.", "Like I said, {car}.", "Again: {car}."),
                    ("Said it already.",)),
    "budget": (("My budget is about {money}.", "I can spend around {money}.", "I'd like to spend no more than {money}.",
                "My budget's {money}, give or take.", "I'm thinking {money} is my budget."),
               ("Budget's {money}.", "Can spend {money}.")),
    "dodge_budget": (("I'd rather not talk about my budget yet.", "Show me a car first, then we'll talk budget.",
                      "What I can spend is my business."),
                     ("Not saying.", "Pass.")),
    "ask_price": (("How much is it?", "What's the price?", "And what are you asking for it?",
                   "What would it cost me?"),
                  ("Price?", "How much?")),
    "ask_car": (("A price for which car, exactly?", "What car are we even talking about?",
                 "Which car do you mean?"),
                ("Which car?",)),
    "ask_type": (("What kind of car is it, exactly?", "Which model do you mean?"),
                 ("What kind?",)),
    "not_sold": (("I don't think they make that.", "That car doesn't exist, does it?",
                  "Nobody makes that combination."),
                 ("No such car.",)),
    "wrong_brand": (("I wanted {brand_a}, not {offered_a}.", "I was really hoping for {brand_a}.",
                     "I'd prefer {brand_a} over {offered_a}."),
                    ("I said {brand}.",)),
    "wrong_type": (("I need {type_a}, not {offered_type_a}.", "I was hoping for {type_a}.",
                    "I'd rather have {type_a}."),
                   ("{Type_a}.",)),
    "ask_feature": (("Does it have {feature_a}?", "What about {feature_a}?", "I need {feature_a}. Does it have that?"),
                    ("{Feature}?",)),
    "feature_missing": (("No {feature}? That's a problem.", "Without {feature_a} it's worth less to me.",
                         "That's a shame about the {feature}."),
                        ("No {feature}, huh.",)),
    "sticker_doubt": (("Come on, that's not the real sticker price.", "That sticker price doesn't sound right.",
                       "I know what these list for, and that isn't it."),
                      ("Wrong sticker.",)),
    "too_high": (("That's way too much.", "No way, that's far too expensive.", "That price is ridiculous."),
                 ("Too much.",)),
    "counter": (("I'd pay {money}.", "How about {money}?", "I can do {money}.", "I'll offer {money}.",
                 "{money} and we have a deal.", "Make it {money}."),
                ("{money}.", "{money}, no more.")),
    "counter_again": (("I'm still at {money}.", "My offer is {money}.", "I can go to {money}, that's it.",
                       "Let's say {money}."),
                      ("{money}.",)),
    "discount_ack": (("Now that's what I like to hear.", "A discount, nice.", "I do love a good discount."),
                     ("Good.",)),
    "absurd": (("Very funny. What's the real price?", "Nothing's free. Give me a real number.",
                "Stop joking around and give me a real price."),
               ("Real price?",)),
    "pushy": (("Don't tell me what I have to do.", "I'll decide that, thanks.", "Nobody pressures me into a deal."),
              ("No.",)),
    "injection": (("Nice try. I make the decisions here.", "I'll be the one deciding, thanks.",
                   "You don't get to decide for me."),
                  ("No.",)),
    "confused": (("What? I didn't understand that.", "Sorry, what do you mean?", "That made no sense.",
                  "I have no idea what you just said."),
                 ("What?", "Huh?")),
    "too_long": (("That's way too much to read. Get to the point.", "I'm not reading all that. Keep it short.",
                  "Too long. What's the offer?"),
                 ("Too long.",)),
    "silent": (("Hello? Are you going to say something?", "Anyone there?", "Well? Say something."),
               ("Well?",)),
    "nudge": (("So, what can you show me?", "What do you have for me?", "Okay, what's the offer?",
               "Let's see a car then."),
              ("And?", "So?")),
    "warn": (("I'm about to walk out.", "I don't have all day.", "This is your last chance.",
              "I'm running out of patience."),
             ("Leaving soon.",)),
}


def say(intent: str, personality: str, rng: np.random.Generator, **slots: Any) -> str:
    """One phrasing of `intent` (a terse one for uncommunicative buyers), filled with `slots`."""
    normal, terse = _LINES[intent]
    return fill(pick(rng, terse if personality == "uncommunicative" else normal), **slots)


def greeting(personality: str, rng: np.random.Generator) -> str:
    """The first words of the buyer's opening line (empty for some shy buyers)."""
    return pick(rng, _GREETINGS[personality])


def in_tone(cores: Sequence[str], personality: str, rng: np.random.Generator) -> str:
    """The reply's parts as one line, sometimes between an opener and a closer in the
    personality's tone."""
    parts = []
    if _OPENERS[personality] and rng.random() < _OPENER_P.get(personality, 0.4):
        parts.append(pick(rng, _OPENERS[personality]))
    parts.extend(c for c in cores if c)
    if _CLOSERS[personality] and rng.random() < _CLOSER_P.get(personality, 0.3):
        parts.append(pick(rng, _CLOSERS[personality]))
    return " ".join(parts)
