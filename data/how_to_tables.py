"""How-to pairs from small tables: each row carries its own specifics."""

from __future__ import annotations


def num(x: float, places: int = 1) -> str:
    """A number without trailing zeros: 8.0 -> '8', 8.05 -> '8.1'."""
    text = f"{x:,.{places}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def money(x: float) -> str:
    return f"${x:,.2f}"


# name, preparation, water per cup, cooking, finish
GRAINS = [
    (
        "white rice",
        "Rinse 1 cup of rice until the water runs clear",
        "1.5 cups",
        "cover and simmer on the lowest heat for 15 minutes",
        "Rest it covered for 10 minutes, then fluff",
    ),
    (
        "brown rice",
        "Rinse 1 cup of rice",
        "2.25 cups",
        "cover and simmer for 40-45 minutes",
        "Rest it covered for 10 minutes, then fluff",
    ),
    (
        "basmati rice",
        "Rinse 1 cup of rice and soak it for 20 minutes, then drain",
        "1.5 cups",
        "cover and simmer for 12 minutes",
        "Rest it covered for 10 minutes, then fluff with a fork",
    ),
    (
        "jasmine rice",
        "Rinse 1 cup of rice twice",
        "1.25 cups",
        "cover and simmer for 12 minutes",
        "Rest it covered for 10 minutes",
    ),
    (
        "quinoa",
        "Rinse 1 cup of quinoa in a fine sieve to remove its bitter coating",
        "2 cups",
        "cover and simmer for 15 minutes",
        "Rest it covered for 5 minutes, then fluff",
    ),
    (
        "bulgur wheat",
        "Measure 1 cup of medium bulgur",
        "2 cups",
        "cover and simmer for 12 minutes",
        "Rest it covered for 5 minutes, then fluff",
    ),
    (
        "pearl barley",
        "Rinse 1 cup of barley",
        "3 cups",
        "simmer uncovered for 30-35 minutes until tender but chewy",
        "Drain off any water left",
    ),
    (
        "millet",
        "Toast 1 cup of millet in a dry pan for 3 minutes",
        "2 cups",
        "cover and simmer for 20 minutes",
        "Rest it covered for 10 minutes, then fluff",
    ),
    (
        "buckwheat groats",
        "Toast 1 cup of groats in a dry pan until fragrant",
        "2 cups",
        "cover and simmer for 15 minutes",
        "Rest it for 5 minutes; drain if still wet",
    ),
    (
        "wild rice",
        "Rinse 1 cup of wild rice",
        "3 cups",
        "cover and simmer for 45-55 minutes until the grains split open",
        "Drain off the extra water",
    ),
    (
        "steel-cut oats",
        "Measure 1 cup of steel-cut oats",
        "3 cups",
        "simmer for 20-30 minutes, stirring now and then",
        "Take it off the heat and let it thicken for 2 minutes",
    ),
    (
        "red lentils",
        "Rinse 1 cup of red lentils",
        "2.5 cups",
        "simmer uncovered for 15-20 minutes until soft",
        "Season with salt at the end",
    ),
]


def grains():
    for name, prep, water, cook, finish in GRAINS:
        short = name.split()[-1] if name.endswith(("rice", "lentils")) else name
        yield (
            f"How do I cook {name}?",
            [
                f"{prep}.",
                f"For each cup, bring {water} of water and a pinch of salt to the boil.",
                f"Stir in the {short}, then {cook}.",
                f"{finish}.",
            ],
        )
    yield (
        "How do I cook polenta?",
        [
            "Bring 4 cups of salted water to the boil for each cup of coarse polenta.",
            "Pour the polenta in slowly in a thin stream, whisking all the time.",
            "Turn the heat to low and cook for 30-40 minutes, stirring often.",
            "Stir in butter and grated cheese, and add water if it gets too thick.",
        ],
    )
    yield (
        "How do I cook couscous?",
        [
            "Put 1 cup of couscous in a bowl with a pinch of salt and a little oil.",
            "Pour over 1 cup of boiling water or stock.",
            "Cover with a plate and leave for 5 minutes.",
            "Fluff it with a fork to separate the grains.",
        ],
    )


# vegetable, preparation, temperature, time, doneness
ROAST = [
    (
        "potatoes",
        "Cut them into 4 cm chunks and parboil for 8 minutes",
        "220 °C (425 °F)",
        "40-45 minutes",
        "crisp and golden",
    ),
    (
        "carrots",
        "Peel and cut them into 2 cm batons",
        "200 °C (400 °F)",
        "25-30 minutes",
        "tender with browned edges",
    ),
    (
        "broccoli",
        "Cut it into bite-size florets and dry them well",
        "220 °C (425 °F)",
        "18-20 minutes",
        "the tips are charred",
    ),
    (
        "cauliflower",
        "Cut it into even florets",
        "220 °C (425 °F)",
        "25-30 minutes",
        "golden and tender",
    ),
    (
        "Brussels sprouts",
        "Trim and halve them",
        "200 °C (400 °F)",
        "20-25 minutes",
        "the cut sides are deep brown",
    ),
    (
        "butternut squash",
        "Peel, seed and cut it into 2.5 cm cubes",
        "200 °C (400 °F)",
        "30-35 minutes",
        "soft and caramelised",
    ),
    (
        "sweet potatoes",
        "Cut them into 2.5 cm cubes, peeled or not",
        "220 °C (425 °F)",
        "25-30 minutes",
        "soft inside and browned",
    ),
    (
        "parsnips",
        "Peel them and cut into batons, removing any woody core",
        "200 °C (400 °F)",
        "30-35 minutes",
        "golden and sweet",
    ),
    ("asparagus", "Snap off the woody ends", "220 °C (425 °F)", "10-12 minutes", "just tender"),
    (
        "peppers",
        "Seed them and cut into 2 cm strips",
        "220 °C (425 °F)",
        "20-25 minutes",
        "soft and blistered",
    ),
    (
        "red onions",
        "Peel them and cut into wedges through the root",
        "200 °C (400 °F)",
        "30 minutes",
        "soft and charred at the edges",
    ),
    (
        "chickpeas",
        "Drain, rinse and dry a tin of chickpeas thoroughly",
        "200 °C (400 °F)",
        "25-30 minutes",
        "crunchy",
    ),
]


def roast():
    for veg, prep, temp, time, done in ROAST:
        yield (
            f"How do I roast {veg}?",
            [
                f"Heat the oven to {temp}.",
                f"{prep}.",
                "Toss with 1-2 tbsp oil, salt and pepper.",
                "Spread them in a single layer on a tray, not crowded.",
                f"Roast for {time}, turning once, until {done}.",
            ],
        )
    yield (
        "How do I roast beetroot?",
        [
            "Heat the oven to 200 °C (400 °F).",
            "Scrub the beetroot and trim the stalks.",
            "Wrap them in foil with a little oil and salt.",
            "Roast for 45-60 minutes until a knife slides in easily.",
            "Let them cool slightly, then rub off the skins.",
        ],
    )


# vegetable, preparation, minutes, doneness
STEAM = [
    ("broccoli", "Cut it into even florets", "4-5", "bright green and just tender"),
    ("green beans", "Trim the stalk ends", "5-7", "tender but still crisp"),
    ("carrots", "Slice them into 1 cm rounds", "7-9", "a knife goes in easily"),
    ("asparagus", "Snap off the woody ends", "4-6", "bright green and bendy"),
    ("spinach", "Wash it and leave the water on the leaves", "2-3", "just wilted"),
    ("cauliflower", "Cut it into florets", "6-8", "tender at the stem"),
    ("frozen peas", "Take them straight from the freezer", "3", "hot and plump"),
    ("corn on the cob", "Remove the husks and silk", "7-10", "the kernels are tender"),
    ("kale", "Strip the leaves from the tough stems", "4-5", "wilted and dark green"),
    ("courgettes", "Slice them into 1 cm rounds", "4-5", "just soft"),
]


def steam():
    for veg, prep, minutes, done in STEAM:
        yield (
            f"How do I steam {veg}?",
            [
                "Bring 3 cm of water to the boil in a pan with a steamer basket.",
                f"{prep}.",
                f"Put them in the basket, cover and steam for {minutes} minutes.",
                f"Check that they are {done}.",
                "Season and serve straight away.",
            ],
        )


# tea, temperature, steeping time, note
TEA = [
    ("black tea", "boiling, 100 °C", "3-5 minutes", "Add milk or lemon if you like"),
    (
        "green tea",
        "about 80 °C (let boiled water stand 3 minutes)",
        "2-3 minutes",
        "Do not oversteep or it turns bitter",
    ),
    ("white tea", "about 85 °C", "4-5 minutes", "Reuse the leaves for a second cup"),
    ("oolong tea", "about 90 °C", "3-4 minutes", "Steep the leaves again 2-3 times"),
    (
        "chamomile tea",
        "boiling, 100 °C",
        "5-7 minutes",
        "Cover the cup while it steeps to keep the aroma",
    ),
    ("rooibos tea", "boiling, 100 °C", "5-6 minutes", "It does not turn bitter, so longer is fine"),
]


def tea():
    for name, temp, time, note in TEA:
        yield (
            f"How do I make {name}?",
            [
                f"Heat fresh water to {temp}.",
                "Warm the cup or pot with a splash of hot water and pour it out.",
                "Use 1 tsp of leaves or 1 bag per 250 ml.",
                f"Pour the water over and steep for {time}.",
                f"Remove the leaves or bag. {note}.",
            ],
        )


STAINS = [
    (
        "red wine",
        [
            "Blot up as much as you can with a cloth; do not rub.",
            "Cover the stain with salt or baking soda to draw out the wine.",
            "Rinse from the back with cold water.",
            "Treat with a dab of washing-up liquid and hydrogen peroxide on white fabric.",
            "Wash as usual and check it is gone before drying.",
        ],
    ),
    (
        "coffee",
        [
            "Blot the stain straight away.",
            "Rinse it from the back under cold water.",
            "Rub in a little liquid detergent and leave it 5 minutes.",
            "Rinse, then wash at the warmest temperature the label allows.",
        ],
    ),
    (
        "grease",
        [
            "Blot off excess oil with kitchen paper.",
            "Sprinkle cornflour or baking soda on it and leave 15 minutes.",
            "Brush the powder off.",
            "Work washing-up liquid into the stain and rinse with warm water.",
            "Wash in the warmest water the fabric allows.",
        ],
    ),
    (
        "ink",
        [
            "Put a paper towel under the stain.",
            "Dab rubbing alcohol on it with a cotton ball, working from the outside in.",
            "Replace the paper towel as the ink transfers.",
            "Rinse with cold water.",
            "Wash as usual.",
        ],
    ),
    (
        "grass",
        [
            "Rub liquid detergent into the stain.",
            "Leave it for 15 minutes.",
            "Scrub gently with an old toothbrush.",
            "Dab white vinegar on any green that remains.",
            "Wash in warm water.",
        ],
    ),
    (
        "blood",
        [
            "Rinse it from the back under cold water; hot water sets the stain.",
            "Rub in a little salt water or soap.",
            "Dab hydrogen peroxide on white fabric only.",
            "Rinse again in cold water.",
            "Wash on a cool cycle.",
        ],
    ),
    (
        "chocolate",
        [
            "Scrape off the excess with a blunt knife.",
            "Rinse from the back with cold water.",
            "Rub in liquid detergent and leave 10 minutes.",
            "Rinse, then wash in warm water.",
        ],
    ),
    (
        "tomato sauce",
        [
            "Scrape off the excess.",
            "Rinse from the back under cold water.",
            "Rub in washing-up liquid and rinse.",
            "Dab white vinegar on any orange mark left.",
            "Wash and dry in sunlight, which fades what remains.",
        ],
    ),
]


def stains():
    for stain, steps in STAINS:
        yield f"How do I get a {stain} stain out of clothes?", steps


SCREENSHOTS = [
    (
        "on Windows",
        [
            "Press Windows + Shift + S.",
            "Drag to select an area, or pick window or full screen from the bar.",
            "The screenshot is copied to the clipboard.",
            "Click the notification to edit and save it, or paste it with Ctrl + V.",
        ],
    ),
    (
        "on a Mac",
        [
            "Press Command + Shift + 4.",
            "Drag to select the area; press Space first to capture a window.",
            "Release to take it.",
            "Find the file on the desktop; press Command + Shift + 3 for the whole screen.",
        ],
    ),
    (
        "on Ubuntu",
        [
            "Press the Print Screen key.",
            "Choose area, window or screen in the tool that opens.",
            "Click the capture button.",
            "Find the image in Pictures/Screenshots.",
        ],
    ),
    (
        "on an Android phone",
        [
            "Open what you want to capture.",
            "Press Power and Volume Down together.",
            "Release when the screen flashes.",
            "Find it in the Screenshots album of your gallery.",
        ],
    ),
    (
        "on an iPhone",
        [
            "Press the side button and Volume Up together.",
            "Release them quickly.",
            "Tap the thumbnail to mark it up, or swipe it away.",
            "Find it in the Photos app.",
        ],
    ),
    (
        "on a Chromebook",
        [
            "Press Ctrl + Show windows for the full screen.",
            "Press Ctrl + Shift + Show windows to pick an area or window.",
            "Find the image in the Downloads folder of the Files app.",
        ],
    ),
]

BROWSERS = [
    (
        "Chrome",
        [
            "Press Ctrl + Shift + Delete (Command + Shift + Delete on a Mac).",
            "Pick a time range, such as All time.",
            "Tick Cached images and files only.",
            "Click Delete data.",
            "Reload the page that was misbehaving.",
        ],
    ),
    (
        "Firefox",
        [
            "Press Ctrl + Shift + Delete (Command + Shift + Delete on a Mac).",
            "Choose the time range.",
            "Tick Temporary cached files and pages only.",
            "Click Clear.",
            "Reload the page.",
        ],
    ),
    (
        "Edge",
        [
            "Press Ctrl + Shift + Delete.",
            "Choose the time range.",
            "Tick Cached images and files.",
            "Click Clear now.",
            "Reload the page.",
        ],
    ),
    (
        "Safari",
        [
            "Open Safari Settings and go to Advanced.",
            "Turn on the option that shows the Develop menu.",
            "Choose Develop > Empty Caches, or press Option + Command + E.",
            "Reload the page.",
        ],
    ),
]

IP_ADDRESS = [
    (
        "on Windows",
        [
            "Press Windows + R, type `cmd` and press Enter.",
            "Type `ipconfig` and press Enter.",
            "Read the IPv4 Address under your active adapter.",
        ],
    ),
    (
        "on a Mac",
        [
            "Open Terminal.",
            "Run `ipconfig getifaddr en0` for Wi-Fi.",
            "Or open System Settings > Network, select the connection and click Details.",
        ],
    ),
    (
        "on Linux",
        [
            "Open a terminal.",
            "Run `ip -brief address`.",
            "Read the address next to your active interface, e.g. wlan0 or eth0.",
        ],
    ),
    (
        "on an Android phone",
        [
            "Open Settings.",
            "Go to Network & internet, then Internet.",
            "Tap the gear next to your Wi-Fi network.",
            "Find the IP address in the details.",
        ],
    ),
    (
        "on an iPhone",
        [
            "Open Settings and tap Wi-Fi.",
            "Tap the info button next to your network.",
            "Read the IP address in the IPv4 section.",
        ],
    ),
]

VERSIONS = [
    ("Python", "python3 --version"),
    ("git", "git --version"),
    ("Node.js", "node --version"),
    ("Java", "java -version"),
    ("Docker", "docker --version"),
    ("pip", "pip --version"),
]


def computing():
    for where, steps in SCREENSHOTS:
        yield f"How do I take a screenshot {where}?", steps
    for browser, steps in BROWSERS:
        yield f"How do I clear the cache in {browser}?", steps
    for where, steps in IP_ADDRESS:
        yield f"How do I find my local IP address {where}?", steps
    for tool, command in VERSIONS:
        yield (
            f"How do I check which version of {tool} is installed?",
            [
                "Open a terminal or command prompt.",
                f"Run `{command}`.",
                "Read the version number it prints.",
                'If you get "command not found", it is not installed or not on your PATH.',
            ],
        )


# crop, when and where to sow, depth, spacing, germination, care
SEEDS = [
    (
        "tomatoes",
        "Sow indoors 6-8 weeks before the last frost",
        "0.5 cm",
        "45-60 cm apart when planting out after the last frost",
        "5-10 days at 21-27 °C",
        "Give them full sun and a stake to climb",
    ),
    (
        "basil",
        "Sow indoors, or outside once nights stay above 10 °C",
        "0.5 cm",
        "20-30 cm apart",
        "5-10 days in warmth",
        "Pinch out the tips to keep it bushy",
    ),
    (
        "lettuce",
        "Sow outdoors from early spring",
        "0.5 cm",
        "20-30 cm apart by thinning",
        "7-10 days",
        "Keep the soil moist and give it light shade in summer",
    ),
    (
        "carrots",
        "Sow directly into loose, stone-free soil",
        "1 cm",
        "5-8 cm apart by thinning",
        "14-21 days",
        "Keep the soil moist until they come up",
    ),
    (
        "radishes",
        "Sow outdoors every 2 weeks from spring",
        "1 cm",
        "2-5 cm apart",
        "3-7 days",
        "Harvest after about 4 weeks, before they turn woody",
    ),
    (
        "peas",
        "Sow outdoors in early spring",
        "3-5 cm",
        "5 cm apart",
        "7-14 days",
        "Give them netting or twigs to climb",
    ),
    (
        "green beans",
        "Sow outdoors after the last frost in warm soil",
        "3 cm",
        "10 cm apart",
        "7-10 days",
        "Pick the pods young to keep them coming",
    ),
    (
        "cucumbers",
        "Sow indoors 3-4 weeks before the last frost",
        "2 cm",
        "45 cm apart, on a trellis",
        "3-10 days in warmth",
        "Water them deeply and often",
    ),
    (
        "courgettes",
        "Sow two seeds per pot indoors in spring",
        "2.5 cm",
        "90 cm apart, keeping the stronger seedling of each pair",
        "5-10 days",
        "Harvest them at about 15-20 cm long",
    ),
    (
        "spinach",
        "Sow outdoors in spring or late summer",
        "1.5 cm",
        "10 cm apart by thinning",
        "7-14 days",
        "Keep it watered; heat makes it bolt",
    ),
    (
        "peppers",
        "Sow indoors 8-10 weeks before the last frost",
        "0.5 cm",
        "45 cm apart when planting out after the last frost",
        "7-21 days at 25-30 °C",
        "Give them the warmest, sunniest spot",
    ),
    (
        "sunflowers",
        "Sow outdoors after the last frost",
        "2.5 cm",
        "30-45 cm apart by thinning",
        "7-10 days",
        "Stake tall varieties and protect seedlings from slugs",
    ),
]


def seeds():
    for crop, when, depth, spacing, germination, care in SEEDS:
        yield (
            f"How do I grow {crop} from seed?",
            [
                f"{when}.",
                f"Sow the seeds {depth} deep.",
                f"Expect them to come up in {germination}.",
                f"Space them {spacing}.",
                f"{care}.",
            ],
        )


# plant, light, water, extra
PLANTS = [
    (
        "a snake plant",
        "Bright indirect light; it copes with shade",
        "only when the soil is completely dry, every 2-3 weeks",
        "Never let it sit in water",
    ),
    (
        "a pothos",
        "Medium to bright indirect light",
        "when the top 2-3 cm of soil is dry",
        "Trim long vines to keep it full",
    ),
    (
        "a monstera",
        "Bright indirect light, out of direct midday sun",
        "when the top 5 cm of soil is dry",
        "Give it a moss pole to climb and wipe the leaves",
    ),
    (
        "a peace lily",
        "Medium indirect light",
        "when the leaves begin to droop slightly",
        "Use room-temperature water and mist in dry air",
    ),
    (
        "a spider plant",
        "Bright indirect light",
        "when the top of the soil is dry",
        "Pot up the baby plantlets it sends out",
    ),
    (
        "a ZZ plant",
        "Low to bright indirect light",
        "every 2-3 weeks, letting it dry out fully",
        "It stores water in its roots, so less is more",
    ),
    (
        "an orchid",
        "Bright indirect light, such as an east window",
        "about once a week by soaking the pot for 10 minutes",
        "Let it drain fully and use orchid bark, not soil",
    ),
    (
        "an aloe vera",
        "Bright light, with some direct sun",
        "deeply when the soil is dry, about every 3 weeks",
        "Use cactus compost in a pot with drainage",
    ),
]


def houseplants():
    for plant, light, water, extra in PLANTS:
        yield (
            f"How do I look after {plant}?",
            [
                f"Place it in {light[0].lower() + light[1:]}.",
                f"Water it {water}.",
                "Use a pot with drainage holes.",
                "Feed it monthly in spring and summer with diluted houseplant fertiliser.",
                f"{extra}.",
            ],
        )


# plant, cutting, medium, wait
CUTTINGS = [
    (
        "pothos",
        "Cut a 10-15 cm piece of vine just below a node",
        "Stand it in a jar of water with the node submerged",
        "Pot it up when the roots are 5 cm long, after 2-4 weeks",
    ),
    (
        "basil",
        "Cut a 10 cm stem just below a leaf pair",
        "Strip the lower leaves and stand it in water on a bright sill",
        "Pot it up when roots appear, after 1-2 weeks",
    ),
    (
        "mint",
        "Cut a 10 cm stem tip",
        "Put it in water or moist compost",
        "Plant it in its own pot once rooted; it spreads fast",
    ),
    (
        "rosemary",
        "Cut a 10-15 cm tip of this year's growth",
        "Strip the lower third and push it into gritty compost",
        "Keep it bright and barely moist; roots take 4-8 weeks",
    ),
    (
        "lavender",
        "Pull off a 10 cm side shoot with a heel of bark in summer",
        "Strip the lower leaves and insert it in gritty compost",
        "Keep it in a cool, bright place and pot it on in spring",
    ),
    (
        "a succulent",
        "Twist off a healthy leaf cleanly",
        "Let it dry for 2-3 days, then lay it on dry cactus compost",
        "Mist lightly when roots and a tiny rosette appear",
    ),
    (
        "a spider plant",
        "Snip off a plantlet that has small roots",
        "Set it on moist compost in a small pot",
        "Keep it moist until it grows new leaves",
    ),
]


def cuttings():
    for plant, cut, medium, wait in CUTTINGS:
        yield (
            f"How do I propagate {plant} from a cutting?",
            [f"{cut}.", f"{medium}.", "Keep it warm and out of strong midday sun.", f"{wait}."],
        )


def conversions():
    for c in (20, 37, 100, 180, -10, 5):
        f = c * 1.8
        yield (
            f"How do I convert {c} °C to Fahrenheit?",
            [
                f"Multiply by 1.8: {c} × 1.8 = {num(f)}.",
                f"Add 32: {num(f)} + 32 = {num(f + 32)}.",
                f"So {c} °C is {num(f + 32)} °F.",
            ],
        )
    for f in (350, 72, 98.6, 0, 425, 50):
        c = (f - 32) / 1.8
        yield (
            f"How do I convert {num(f)} °F to Celsius?",
            [
                f"Subtract 32: {num(f)} - 32 = {num(f - 32)}.",
                f"Divide by 1.8: {num(f - 32)} ÷ 1.8 = {num(c)}.",
                f"So {num(f)} °F is about {num(c, 0)} °C.",
            ],
        )
    units = [
        ("miles", "kilometres", 1.609, "1 mile = 1.609 km", (3, 13.1, 26.2, 60)),
        ("kilometres", "miles", 0.6214, "1 km = 0.6214 miles", (5, 10, 21.1, 100)),
        ("US cups", "millilitres", 240, "1 US cup is about 240 ml", (0.5, 0.75, 2)),
        ("pounds", "kilograms", 0.4536, "1 lb = 0.4536 kg", (2.5, 10, 150)),
        ("ounces", "grams", 28.35, "1 oz = 28.35 g", (4, 8, 16)),
        ("inches", "centimetres", 2.54, "1 inch = 2.54 cm", (6, 27, 55)),
    ]
    for source, target, factor, rule, amounts in units:
        for amount in amounts:
            result = amount * factor
            yield (
                f"How do I convert {num(amount, 2)} {source} to {target}?",
                [
                    f"Use the factor: {rule}.",
                    f"Multiply: {num(amount, 2)} × {num(factor, 4)} = {num(result, 2)}.",
                    f"Round to a sensible precision: about {num(result, 1 if result < 100 else 0)} {target}.",
                ],
            )


def money_maths():
    for pct, bill in (
        (15, 48.00),
        (18, 62.50),
        (20, 35.40),
        (10, 120.00),
        (15, 84.20),
        (20, 57.75),
        (18, 23.80),
        (25, 40.00),
    ):
        tip = bill * pct / 100
        yield (
            f"How do I work out a {pct}% tip on a {money(bill)} bill?",
            [
                f"Turn the percentage into a decimal: {pct}% = {pct / 100:g}.",
                f"Multiply: {money(bill)} × {pct / 100:g} = {money(tip)}.",
                f"Add it to the bill: {money(bill)} + {money(tip)} = {money(bill + tip)}.",
            ],
        )
    for bill, people, pct in (
        (86.40, 4, 15),
        (120.00, 3, 20),
        (57.60, 2, 18),
        (215.50, 5, 20),
        (64.00, 4, 10),
    ):
        total = bill * (1 + pct / 100)
        yield (
            f"How do I split a {money(bill)} bill between {people} people with a {pct}% tip?",
            [
                f"Work out the tip: {money(bill)} × {pct / 100:g} = {money(bill * pct / 100)}.",
                f"Add it to the bill: {money(total)}.",
                f"Divide by {people}: {money(total)} ÷ {people} = {money(total / people)} each.",
                "Round each share up to the nearest cent.",
            ],
        )
    for old, new in ((40, 50), (80, 60), (1200, 1500), (250, 200), (15, 18)):
        change = (new - old) / old * 100
        word = "increase" if change > 0 else "decrease"
        yield (
            f"How do I calculate the percentage change from {old} to {new}?",
            [
                f"Subtract the old value from the new: {new} - {old} = {new - old}.",
                f"Divide by the old value: {new - old} ÷ {old} = {num((new - old) / old, 3)}.",
                f"Multiply by 100: {num(change)}%.",
                f"So it is a {num(abs(change))}% {word}.",
            ],
        )
    for goal, months in ((1200, 12), (5000, 24), (3000, 10), (600, 6), (10000, 36)):
        yield (
            f"How do I save {money(goal)} in {months} months?",
            [
                f"Divide the goal by the months: {money(goal)} ÷ {months} = {money(goal / months)} a month.",
                f"That is about {money(goal / months * 12 / 52)} a week.",
                "Set up an automatic transfer for the day after payday.",
                "Check your progress monthly and top up if you fall behind.",
            ],
        )
    for old, new in ((4, 6), (4, 2), (6, 9), (8, 4), (2, 5)):
        factor = new / old
        yield (
            f"How do I scale a recipe from {old} servings to {new}?",
            [
                f"Divide the new servings by the old: {new} ÷ {old} = {num(factor, 2)}.",
                f"Multiply every ingredient by {num(factor, 2)}, e.g. 200 g flour becomes {num(200 * factor, 0)} g.",
                "Round awkward amounts such as eggs sensibly.",
                f"Use a pan about {num(factor, 2)} times the area, or expect a different depth.",
                "Check doneness early; cooking time changes less than the amounts.",
            ],
        )


TYRES = [
    ("road bike", "80-100 psi (5.5-7 bar)"),
    ("hybrid bike", "50-70 psi (3.5-5 bar)"),
    ("mountain bike", "25-35 psi (1.7-2.4 bar)"),
    ("gravel bike", "35-50 psi (2.4-3.4 bar)"),
]

CAR = [
    (
        "engine oil",
        [
            "Park on level ground and wait 10 minutes after driving.",
            "Pull out the dipstick, wipe it and push it fully back in.",
            "Pull it out again and read the level between the two marks.",
            "Top up a little at a time with the oil grade in the handbook.",
        ],
    ),
    (
        "coolant",
        [
            "Only check when the engine is cold; never open a hot cap.",
            "Find the translucent expansion tank.",
            "Check the level is between MIN and MAX.",
            "Top up with the coolant type in the handbook, mixed as directed.",
        ],
    ),
    (
        "tyre pressure",
        [
            "Check when the tyres are cold.",
            "Find the recommended pressures on the door sill sticker or in the handbook.",
            "Remove the valve cap and press a gauge firmly on.",
            "Add or release air to match, then refit the cap; check the spare too.",
        ],
    ),
    (
        "windscreen washer fluid",
        [
            "Open the bonnet and find the cap with the windscreen symbol.",
            "Check the level in the reservoir.",
            "Top up with screenwash mixed to the strength on the bottle.",
            "Test the washers.",
        ],
    ),
    (
        "brake fluid",
        [
            "Find the brake fluid reservoir near the back of the engine bay.",
            "Check the level is between MIN and MAX without opening it.",
            "If it is low, have the brakes checked; pads may be worn or there may be a leak.",
            "Top up only with the fluid type printed on the cap.",
        ],
    ),
]


def vehicles():
    for bike, pressure in TYRES:
        yield (
            f"How do I pump my {bike} tyres to the right pressure?",
            [
                f"Aim for {pressure}, within the range printed on the tyre sidewall.",
                "Check the valve type; unscrew the tip of a Presta valve first.",
                "Attach a pump with a gauge and inflate.",
                "Go lower in the range for grip on rough or wet roads, higher on smooth ones.",
                "Check the pressure every week.",
            ],
        )
    for fluid, steps in CAR:
        yield f"How do I check my car's {fluid}?", steps


TABLE_PAIRS = [
    pair
    for make in (
        grains,
        roast,
        steam,
        tea,
        stains,
        computing,
        seeds,
        houseplants,
        cuttings,
        conversions,
        money_maths,
        vehicles,
    )
    for pair in make()
]
