"""Hand-written how-to questions and their steps (original text)."""

COOKING = [
    (
        "How do I poach an egg?",
        [
            "Bring a small pan of water to a bare simmer and add a splash of vinegar.",
            "Crack the egg into a cup.",
            "Stir the water into a gentle whirlpool and slide the egg into the centre.",
            "Cook for 3 minutes for a runny yolk.",
            "Lift it out with a slotted spoon and drain on kitchen paper.",
        ],
    ),
    (
        "How do I make scrambled eggs?",
        [
            "Beat 2 eggs with a pinch of salt.",
            "Melt a knob of butter in a non-stick pan over low heat.",
            "Pour in the eggs and stir slowly with a spatula.",
            "Take the pan off the heat while the eggs still look slightly wet.",
            "Serve at once; they keep cooking on the plate.",
        ],
    ),
    (
        "How do I make a plain omelette?",
        [
            "Beat 3 eggs with salt and pepper.",
            "Heat a little butter in a 20 cm non-stick pan over medium heat.",
            "Pour in the eggs and pull the set edges to the middle with a spatula.",
            "When the top is almost set, add any filling to one half.",
            "Fold it over and slide it onto a plate.",
        ],
    ),
    (
        "How do I make pancakes?",
        [
            "Whisk 200 g flour, 2 tsp baking powder, 1 tbsp sugar and a pinch of salt.",
            "Beat in 1 egg, 250 ml milk and 2 tbsp melted butter until just smooth.",
            "Heat a lightly oiled pan over medium heat.",
            "Pour in a ladle of batter and cook until bubbles appear on top.",
            "Flip and cook the other side for about 1 minute.",
        ],
    ),
    (
        "How do I cook dried pasta?",
        [
            "Bring a large pot of water to a rolling boil.",
            "Add about 1 tbsp salt per 4 litres of water.",
            "Add the pasta and stir during the first minute so it does not stick.",
            "Boil for the time on the packet, tasting a piece 1 minute early.",
            "Save a cup of the cooking water, then drain and toss with the sauce.",
        ],
    ),
    (
        "How do I make a simple tomato sauce?",
        [
            "Soften a chopped onion in 2 tbsp olive oil for 8 minutes.",
            "Add 2 sliced garlic cloves and cook for 1 minute.",
            "Add a 400 g tin of chopped tomatoes and a pinch of salt.",
            "Simmer for 15-20 minutes until thickened.",
            "Taste, add pepper or a little sugar if it is sharp, and stir in basil.",
        ],
    ),
    (
        "How do I make a vinaigrette?",
        [
            "Put 1 tbsp vinegar, 1 tsp mustard and a pinch of salt in a jar.",
            "Add 3 tbsp olive oil.",
            "Close the lid and shake hard for 20 seconds.",
            "Taste on a lettuce leaf and adjust the salt or acid.",
            "Keep leftovers in the fridge for up to a week.",
        ],
    ),
    (
        "How do I caramelise onions?",
        [
            "Slice 3 onions thinly.",
            "Cook them in butter and oil over medium-low heat with a pinch of salt.",
            "Stir every few minutes; add a splash of water if they catch.",
            "Keep going for 35-45 minutes until deep golden and soft.",
            "Deglaze the pan with a spoon of water or vinegar and scrape up the brown bits.",
        ],
    ),
    (
        "How do I sharpen a kitchen knife on a whetstone?",
        [
            "Soak the stone in water for 10 minutes if it is a soaking stone.",
            "Hold the blade at about 15-20 degrees to the coarse side.",
            "Push the edge across the stone from heel to tip, 10 times per side.",
            "Repeat on the fine side with lighter strokes.",
            "Rinse and dry the knife, then test it on a sheet of paper.",
        ],
    ),
    (
        "How do I season a cast-iron pan?",
        [
            "Wash the pan and dry it completely on the hob.",
            "Rub a very thin layer of vegetable oil over every surface.",
            "Wipe off as much oil as you can with a clean cloth.",
            "Bake it upside down at 230 °C for 1 hour.",
            "Let it cool in the oven; repeat 2-3 times for a stronger coat.",
        ],
    ),
    (
        "How do I make chicken stock?",
        [
            "Put a roast chicken carcass in a large pot.",
            "Add an onion, a carrot, a celery stick, a bay leaf and peppercorns.",
            "Cover with cold water and bring slowly to a simmer.",
            "Simmer gently for 2-3 hours, skimming off any foam.",
            "Strain, cool quickly and refrigerate or freeze.",
        ],
    ),
    (
        "How do I make coffee in a French press?",
        [
            "Heat water to just off the boil, about 94 °C.",
            "Add 15 g of coarsely ground coffee per 250 ml of water.",
            "Pour in the water, stir once and put the lid on.",
            "Wait 4 minutes.",
            "Press the plunger down slowly and pour straight away.",
        ],
    ),
    (
        "How do I make pour-over coffee?",
        [
            "Rinse a paper filter in the dripper with hot water and discard the water.",
            "Add 15 g of medium-fine ground coffee.",
            "Pour 30 ml of water at about 94 °C to wet the grounds; wait 30 seconds.",
            "Pour the rest, up to 250 ml, slowly in circles.",
            "Let it drain; the whole brew should take about 3 minutes.",
        ],
    ),
    (
        "How do I make cold brew coffee?",
        [
            "Mix 100 g of coarsely ground coffee with 1 litre of cold water.",
            "Stir so that all the grounds are wet.",
            "Cover and leave in the fridge for 12-18 hours.",
            "Strain through a paper filter or a fine cloth.",
            "Dilute the concentrate 1:1 with water or milk and serve over ice.",
        ],
    ),
    (
        "How do I make matcha?",
        [
            "Sift 1-2 tsp of matcha into a bowl.",
            "Add 70 ml of water at about 80 °C.",
            "Whisk quickly in a zigzag motion for 20 seconds.",
            "Stop when a fine foam covers the surface.",
            "Drink it straight away, or top up with hot or steamed milk.",
        ],
    ),
    (
        "How do I bake a simple loaf of bread?",
        [
            "Mix 500 g strong flour, 7 g instant yeast, 10 g salt and 320 ml warm water.",
            "Knead for 10 minutes until smooth and springy.",
            "Cover and leave it until doubled, about 1 hour.",
            "Shape it, put it in a greased loaf tin and let it rise 40 minutes.",
            "Bake at 220 °C for 30 minutes, until the base sounds hollow when tapped.",
        ],
    ),
    (
        "How do I make pizza dough?",
        [
            "Mix 300 g flour, 5 g instant yeast, 6 g salt and 190 ml warm water.",
            "Add 1 tbsp olive oil and knead for 8 minutes.",
            "Cover and leave to rise for 1-2 hours.",
            "Divide into 2 balls and stretch each into a thin round.",
            "Top and bake on the hottest oven setting for 8-10 minutes.",
        ],
    ),
    (
        "How do I cook a steak in a pan?",
        [
            "Take the steak out of the fridge 30 minutes before cooking and pat it dry.",
            "Season well with salt.",
            "Heat a heavy pan until very hot and add a little oil.",
            "Cook 2-3 minutes per side for medium-rare on a 2.5 cm steak.",
            "Rest it on a board for 5 minutes before slicing.",
        ],
    ),
    (
        "How do I make guacamole?",
        [
            "Halve 2 ripe avocados, remove the stones and scoop out the flesh.",
            "Mash with a fork, leaving some texture.",
            "Stir in the juice of 1 lime and a pinch of salt.",
            "Add finely chopped red onion, chilli and coriander.",
            "Taste, adjust the lime and salt, and serve straight away.",
        ],
    ),
    (
        "How do I make overnight oats?",
        [
            "Put 50 g rolled oats in a jar.",
            "Add 150 ml milk or yoghurt and a pinch of salt.",
            "Stir in a spoon of honey or chia seeds if you like.",
            "Close the jar and refrigerate overnight.",
            "Top with fruit or nuts in the morning and eat cold.",
        ],
    ),
    (
        "How do I make hummus?",
        [
            "Drain a 400 g tin of chickpeas, keeping the liquid.",
            "Blend the chickpeas with 2 tbsp tahini, 1 garlic clove and the juice of 1 lemon.",
            "Add 3-4 tbsp of the chickpea liquid while blending until smooth.",
            "Season with salt and a pinch of cumin.",
            "Serve with a drizzle of olive oil.",
        ],
    ),
    (
        "How do I ripen an avocado faster?",
        [
            "Put the avocado in a paper bag.",
            "Add a banana or an apple, which give off ethylene gas.",
            "Fold the bag shut and keep it at room temperature.",
            "Check it daily by pressing gently near the stem.",
            "Move it to the fridge once it gives slightly.",
        ],
    ),
    (
        "How do I soften butter quickly?",
        [
            "Cut the butter into small cubes.",
            "Spread the cubes out on a plate.",
            "Leave them at room temperature for 10-15 minutes.",
            "Or grate cold butter, which softens in a few minutes.",
        ],
    ),
    (
        "How do I whip cream?",
        [
            "Chill the bowl and whisk for 10 minutes.",
            "Pour in cold double or heavy cream.",
            "Whisk until it starts to thicken, then add a little sugar.",
            "Stop at soft peaks that just hold their shape.",
            "Stop early rather than late; overwhipped cream turns grainy.",
        ],
    ),
    (
        "How do I make popcorn on the stove?",
        [
            "Heat 2 tbsp oil in a large pan with a lid over medium-high heat.",
            "Add 3 kernels and wait until they pop.",
            "Add 75 g of kernels in one layer and cover.",
            "Shake the pan often, leaving the lid slightly open to let steam out.",
            "Take it off the heat when the popping slows to 2 seconds between pops.",
        ],
    ),
    (
        "How do I make a fruit smoothie?",
        [
            "Put 250 ml milk, juice or yoghurt in the blender first.",
            "Add 1 banana and a handful of frozen berries.",
            "Add a spoon of oats or nut butter for extra body.",
            "Blend for 30-60 seconds until smooth.",
            "Add more liquid if it is too thick, then serve.",
        ],
    ),
]

HOUSEHOLD = [
    (
        "How do I unclog a sink with a plunger?",
        [
            "Remove the plug or strainer and scoop out visible debris.",
            "Block the overflow hole with a wet cloth.",
            "Fill the sink with enough water to cover the plunger cup.",
            "Plunge firmly up and down 15-20 times, keeping the seal.",
            "Run hot water to check that it drains; repeat if needed.",
        ],
    ),
    (
        "How do I fix a running toilet?",
        [
            "Take the cistern lid off.",
            "Check whether the flapper or flush valve seal is worn or dirty.",
            "Adjust the float so the water stops about 2 cm below the overflow pipe.",
            "Clean or replace the flapper if water still trickles into the bowl.",
            "Flush a few times to test.",
        ],
    ),
    (
        "How do I hang a picture straight?",
        [
            "Decide the height; the centre of the picture is usually at eye level.",
            "Measure the distance from the picture's top edge to its hanging wire.",
            "Mark the hook position on the wall.",
            "Check for hidden pipes or cables, then fix the hook.",
            "Hang the picture and adjust it with a spirit level.",
        ],
    ),
    (
        "How do I patch a small hole in plasterboard?",
        [
            "Trim loose edges around the hole with a craft knife.",
            "Cover larger holes with a self-adhesive mesh patch.",
            "Spread filler over it with a putty knife, slightly proud of the wall.",
            "Let it dry, then sand it flush.",
            "Prime and paint to match the wall.",
        ],
    ),
    (
        "How do I bleed a radiator?",
        [
            "Turn the heating off and let the radiators cool.",
            "Hold a cloth under the bleed valve at the top corner.",
            "Open the valve a quarter turn with a radiator key.",
            "Close it when water starts to come out instead of air.",
            "Check the boiler pressure and top it up if it has dropped.",
        ],
    ),
    (
        "How do I reset a tripped circuit breaker?",
        [
            "Switch off or unplug the appliances on the affected circuit.",
            "Find the switch in the consumer unit that is in the off position.",
            "Push it firmly back to on.",
            "Turn the appliances back on one at a time.",
            "Call an electrician if it trips again straight away.",
        ],
    ),
    (
        "How do I descale a kettle?",
        [
            "Fill the kettle halfway with equal parts water and white vinegar.",
            "Bring it to the boil, then switch off.",
            "Leave it to stand for an hour.",
            "Pour it out and scrub any remaining scale.",
            "Boil clean water twice and pour it away to remove the taste.",
        ],
    ),
    (
        "How do I clean a microwave?",
        [
            "Put a bowl of water with lemon slices or a splash of vinegar inside.",
            "Heat it on full power for 3-5 minutes until steamy.",
            "Leave the door closed for 5 minutes.",
            "Remove the bowl carefully and wipe the softened grime away.",
            "Wash the turntable in warm soapy water.",
        ],
    ),
    (
        "How do I clean an oven without harsh chemicals?",
        [
            "Remove the racks and soak them in hot soapy water.",
            "Mix baking soda with a little water into a thick paste.",
            "Spread it over the cold oven interior, avoiding the heating elements.",
            "Leave it overnight.",
            "Wipe it off with a damp cloth, spraying vinegar on stubborn spots.",
        ],
    ),
    (
        "How do I clean a shower head?",
        [
            "Fill a plastic bag with white vinegar.",
            "Tie it around the shower head so the nozzles are submerged.",
            "Leave it for 1-2 hours.",
            "Remove the bag and scrub the nozzles with an old toothbrush.",
            "Run hot water through it for a minute.",
        ],
    ),
    (
        "How do I clean a washing machine?",
        [
            "Wipe the rubber door seal, including inside the folds.",
            "Clean the detergent drawer in warm water.",
            "Run an empty hot wash at 60-90 °C with a cup of soda crystals or a machine cleaner.",
            "Clean the drain filter if your machine has one.",
            "Leave the door open afterwards to let it dry.",
        ],
    ),
    (
        "How do I clean a dishwasher filter?",
        [
            "Take out the bottom rack.",
            "Twist and lift out the filter at the base.",
            "Rinse it under the tap and scrub it with a soft brush.",
            "Wipe out the hole underneath.",
            "Put the filter back and lock it in place.",
        ],
    ),
    (
        "How do I defrost a freezer?",
        [
            "Move the food to a cool box or a friend's freezer.",
            "Turn the freezer off and leave the door open.",
            "Put towels and trays down to catch the meltwater.",
            "Speed it up with bowls of hot water inside; never chip the ice with a knife.",
            "Dry it thoroughly, switch it on and wait until it is cold before refilling.",
        ],
    ),
    (
        "How do I fix a squeaky door hinge?",
        [
            "Close the door and tap the hinge pin upwards with a nail and hammer.",
            "Pull the pin out and wipe it clean.",
            "Coat it lightly with petroleum jelly or a silicone lubricant.",
            "Tap it back in.",
            "Open and close the door a few times to spread the lubricant.",
        ],
    ),
    (
        "How do I reseal a bath with silicone?",
        [
            "Cut and scrape out the old sealant completely.",
            "Clean the joint with isopropyl alcohol and let it dry.",
            "Fill the bath with water so the joint opens to its widest.",
            "Run an even bead of bathroom silicone along the joint.",
            "Smooth it with a wet finger and leave it 24 hours before use.",
        ],
    ),
    (
        "How do I clean windows without streaks?",
        [
            "Mix one part vinegar with one part warm water in a spray bottle.",
            "Wipe off loose dust first.",
            "Spray the glass and work from top to bottom with a squeegee.",
            "Wipe the blade after each stroke.",
            "Buff the edges with a dry microfibre cloth; avoid working in direct sun.",
        ],
    ),
    (
        "How do I get rid of fruit flies?",
        [
            "Throw out overripe fruit and empty the food bin.",
            "Fill a small jar with cider vinegar and a drop of washing-up liquid.",
            "Cover it with cling film and poke a few small holes.",
            "Leave it near where the flies gather.",
            "Replace it every few days until they are gone.",
        ],
    ),
    (
        "How do I fold a fitted sheet?",
        [
            "Hold the sheet inside out by two adjacent corners.",
            "Tuck one corner into the other.",
            "Do the same with the other two corners.",
            "Lay it flat and fold the elastic edges in to make a rectangle.",
            "Fold it in thirds lengthwise, then in half until it is the size you want.",
        ],
    ),
    (
        "How do I iron a shirt?",
        [
            "Set the iron to the fabric's temperature and iron the shirt while slightly damp.",
            "Start with the collar, underside first.",
            "Iron the cuffs, then the sleeves.",
            "Iron the back, then each front panel, working around the buttons.",
            "Hang it straight away on a hanger.",
        ],
    ),
    (
        "How do I sew on a button?",
        [
            "Thread a needle with about 40 cm of thread and knot the ends together.",
            "Push the needle up from the back where the button goes.",
            "Stitch through opposite holes 5-6 times, leaving a little slack.",
            "Wrap the thread around the stitches under the button to make a shank.",
            "Push the needle to the back, knot it and trim the thread.",
        ],
    ),
    (
        "How do I wash a wool jumper by hand?",
        [
            "Fill a basin with cool water and a little wool detergent.",
            "Turn the jumper inside out and submerge it.",
            "Squeeze gently for a few minutes; do not rub or wring.",
            "Rinse in cool water and press the water out.",
            "Roll it in a towel, then dry it flat away from heat.",
        ],
    ),
    (
        "How do I remove a stripped screw?",
        [
            "Press a wide rubber band between the screwdriver and the screw head.",
            "Push down hard and turn slowly anticlockwise.",
            "If it still slips, use a screw extractor bit in a drill on reverse.",
            "For raised heads, grip the head with locking pliers and turn.",
            "Replace the screw with a new one.",
        ],
    ),
    (
        "How do I replace a smoke alarm battery?",
        [
            "Twist the alarm anticlockwise off its base.",
            "Open the battery compartment and remove the old battery.",
            "Fit a new battery of the same type, matching the + and - marks.",
            "Refit the alarm on its base.",
            "Press the test button until it sounds.",
        ],
    ),
    (
        "How do I reduce condensation on windows?",
        [
            "Open the windows for 10-15 minutes each morning.",
            "Use extractor fans when cooking and showering.",
            "Dry clothes outdoors or in a ventilated room.",
            "Keep the heating at a low, steady temperature.",
            "Wipe the glass dry each morning and use a dehumidifier if it persists.",
        ],
    ),
]

COMPUTING = [
    (
        "How do I create a new branch in git?",
        [
            "Check out the branch you want to start from, e.g. `git switch main`.",
            "Update it with `git pull`.",
            "Create and switch to the new branch with `git switch -c my-feature`.",
            "Commit your work on it as usual.",
            "Push it with `git push -u origin my-feature`.",
        ],
    ),
    (
        "How do I undo my last git commit?",
        [
            "Check that the commit has not been pushed yet.",
            "Run `git reset --soft HEAD~1` to undo it and keep the changes staged.",
            "Or run `git reset HEAD~1` to keep the changes but unstage them.",
            "Fix what you need and commit again.",
            "If it was already pushed, use `git revert HEAD` instead.",
        ],
    ),
    (
        "How do I resolve a merge conflict in git?",
        [
            "Run `git status` to see which files conflict.",
            "Open each file and find the `<<<<<<<`, `=======` and `>>>>>>>` markers.",
            "Edit the text to what it should be and delete the markers.",
            "Stage each fixed file with `git add`.",
            "Finish with `git commit` (or `git rebase --continue` during a rebase).",
        ],
    ),
    (
        "How do I stash changes in git?",
        [
            'Run `git stash push -m "short note"` to save your uncommitted changes.',
            "Switch branches or pull as needed.",
            "List stashes with `git stash list`.",
            "Bring the latest one back with `git stash pop`.",
            "Resolve any conflicts if the code changed in the meantime.",
        ],
    ),
    (
        "How do I rename a git branch?",
        [
            "Switch to the branch.",
            "Run `git branch -m new-name`.",
            "Push the new name with `git push -u origin new-name`.",
            "Delete the old remote branch with `git push origin --delete old-name`.",
            "Tell collaborators to update their local copies.",
        ],
    ),
    (
        "How do I set up an SSH key for GitHub?",
        [
            'Run `ssh-keygen -t ed25519 -C "you@example.com"` and accept the default path.',
            "Set a passphrase when asked.",
            "Copy the public key from `~/.ssh/id_ed25519.pub`.",
            "Add it under GitHub Settings > SSH and GPG keys > New SSH key.",
            "Test it with `ssh -T git@github.com`.",
        ],
    ),
    (
        "How do I create a Python virtual environment?",
        [
            "Open a terminal in your project folder.",
            "Run `python3 -m venv .venv`.",
            "Activate it: `source .venv/bin/activate` (or `.venv\\Scripts\\activate` on Windows).",
            "Install packages with `pip install`.",
            "Leave it with `deactivate`.",
        ],
    ),
    (
        "How do I install a Python package with pip?",
        [
            "Activate your virtual environment first.",
            "Run `pip install package-name`.",
            "Pin a version if you need one: `pip install package-name==1.2.3`.",
            "Check it with `pip show package-name`.",
            "Record your dependencies with `pip freeze > requirements.txt`.",
        ],
    ),
    (
        "How do I find large files on Linux?",
        [
            "Open a terminal.",
            "Run `du -ah /path | sort -rh | head -n 20` to list the 20 biggest items.",
            "Or run `find /path -type f -size +500M` for files over 500 MB.",
            "Check what each file is before deleting anything.",
            "Empty the trash to actually free the space.",
        ],
    ),
    (
        "How do I check free disk space on Linux?",
        [
            "Open a terminal.",
            "Run `df -h` to see each filesystem's size, used and available space.",
            "Look at the line whose mount point is `/` or your home directory.",
            "Run `du -sh ~/*` to see which of your folders use the most.",
        ],
    ),
    (
        "How do I extract a .tar.gz file?",
        [
            "Open a terminal in the folder that holds the archive.",
            "Run `tar -xzf archive.tar.gz`.",
            "Add `-C target/` to extract into another folder.",
            "Use `tar -tzf archive.tar.gz` first to list the contents without extracting.",
        ],
    ),
    (
        "How do I find which process is using a port on Linux?",
        [
            "Open a terminal.",
            "Run `sudo lsof -i :8080`, replacing 8080 with your port.",
            "Or run `sudo ss -ltnp | grep :8080`.",
            "Note the PID in the output.",
            "Stop it with `kill PID`, or `kill -9 PID` if it does not exit.",
        ],
    ),
    (
        "How do I schedule a daily job with cron?",
        [
            "Run `crontab -e` to edit your crontab.",
            "Add a line such as `30 2 * * * /home/me/backup.sh` for 02:30 every day.",
            "Use full paths, since cron has a minimal environment.",
            "Save and close the editor.",
            "Check it with `crontab -l` and watch the script's log the next day.",
        ],
    ),
    (
        "How do I make a strong password I can remember?",
        [
            "Pick four or more random, unrelated words, e.g. from a dice word list.",
            "Join them with spaces or hyphens.",
            "Use it only for one account.",
            "Store your other passwords in a password manager.",
            "Turn on two-factor authentication where you can.",
        ],
    ),
    (
        "How do I set up two-factor authentication?",
        [
            "Install an authenticator app on your phone.",
            "Open the security settings of the account.",
            "Choose the authenticator app option and scan the QR code.",
            "Enter the 6-digit code to confirm.",
            "Save the backup codes somewhere safe and offline.",
        ],
    ),
    (
        "How do I back up my photos safely?",
        [
            "Keep 3 copies of your photos.",
            "Store them on 2 different kinds of storage, e.g. a laptop and an external drive.",
            "Keep 1 copy off-site, such as a cloud service or a drive at a relative's home.",
            "Schedule backups to run automatically.",
            "Restore a few files now and then to check the backups work.",
        ],
    ),
    (
        "How do I free up storage on my phone?",
        [
            "Open the storage page in Settings to see what uses the most space.",
            "Delete apps you have not used in months.",
            "Back up photos and videos, then remove them from the phone.",
            "Clear large downloads and old chat media.",
            "Turn off automatic saving of media in messaging apps.",
        ],
    ),
    (
        "How do I update Ubuntu from the terminal?",
        [
            "Open a terminal.",
            "Run `sudo apt update` to refresh the package lists.",
            "Run `sudo apt upgrade` and confirm to install the updates.",
            "Run `sudo apt autoremove` to remove packages no longer needed.",
            "Restart if the kernel was updated.",
        ],
    ),
    (
        "How do I search for text in all files of a folder?",
        [
            "Open a terminal in the folder.",
            'Run `grep -rn "search text" .` to list matching lines with file names and line numbers.',
            "Add `-i` to ignore case.",
            'Add `--include="*.py"` to search only some file types.',
        ],
    ),
    (
        "How do I make a bootable USB drive?",
        [
            "Download the operating system's ISO image from its official site.",
            "Insert a USB stick of at least 8 GB; it will be erased.",
            "Open a writing tool such as balenaEtcher or Rufus.",
            "Select the ISO and the USB drive, then start writing.",
            "Restart the computer and choose the USB drive in the boot menu.",
        ],
    ),
    (
        "How do I freeze the top row in a spreadsheet?",
        [
            "Open the sheet.",
            "Click the View menu.",
            "Choose Freeze, then 1 row (Google Sheets) or Freeze Top Row (Excel).",
            "Scroll down to check that the header stays visible.",
        ],
    ),
    (
        "How do I add up a column in a spreadsheet?",
        [
            "Click the empty cell below the numbers.",
            "Type `=SUM(` and select the cells, e.g. `=SUM(B2:B20)`.",
            "Close the bracket and press Enter.",
            "Use the AutoSum button as a shortcut.",
        ],
    ),
    (
        "How do I save a spreadsheet as a CSV file?",
        [
            "Open the sheet you want to export.",
            "Choose File > Save As (Excel) or File > Download (Google Sheets).",
            "Pick CSV as the format.",
            "Save it; only the current sheet is exported.",
            "Reopen the file to check dates and leading zeros came through.",
        ],
    ),
    (
        "How do I make a bar chart in a spreadsheet?",
        [
            "Put the categories in one column and the values in the next.",
            "Select both columns, including the headers.",
            "Choose Insert > Chart.",
            "Pick the bar or column chart type.",
            "Add a title and axis labels.",
        ],
    ),
]

GARDENING = [
    (
        "How do I start a compost heap?",
        [
            "Choose a shady, level spot on bare soil.",
            "Add a layer of twigs for drainage.",
            "Mix green waste (vegetable scraps, grass) with brown waste (cardboard, leaves) about half and half.",
            "Keep it as damp as a wrung-out sponge.",
            "Turn it every few weeks; compost is ready in 6-12 months.",
        ],
    ),
    (
        "How do I prune roses in winter?",
        [
            "Prune in late winter, before new growth starts.",
            "Use clean, sharp secateurs.",
            "Cut out dead, damaged and crossing stems first.",
            "Cut the remaining stems back by about a third.",
            "Make each cut just above an outward-facing bud, sloping away from it.",
        ],
    ),
    (
        "How do I mulch a flower bed?",
        [
            "Weed the bed and water it well.",
            "Spread 5-8 cm of bark, compost or leaf mould over the soil.",
            "Keep the mulch a few centimetres away from stems and trunks.",
            "Top it up each spring.",
        ],
    ),
    (
        "How do I aerate a lawn?",
        [
            "Aerate in autumn or spring when the soil is moist.",
            "Push a garden fork 10 cm into the lawn and rock it back slightly.",
            "Repeat every 15 cm, focusing on compacted areas.",
            "Brush sharp sand or top dressing into the holes.",
            "Water if the weather is dry.",
        ],
    ),
    (
        "How do I get rid of aphids on plants?",
        [
            "Rub small groups off with your fingers.",
            "Blast the rest off with a strong jet of water.",
            "Spray with a mild soap solution if they return.",
            "Encourage ladybirds and lacewings, which eat aphids.",
            "Check the undersides of leaves every few days.",
        ],
    ),
    (
        "How do I collect rainwater in the garden?",
        [
            "Place a water butt next to a downpipe.",
            "Raise it on a stand so a watering can fits under the tap.",
            "Fit a diverter kit to the downpipe.",
            "Keep the lid on to keep out light, leaves and mosquitoes.",
            "Clean it out once a year.",
        ],
    ),
    (
        "How do I plant a bare-root tree?",
        [
            "Soak the roots in water for an hour.",
            "Dig a hole wider than the roots and as deep as the soil mark on the trunk.",
            "Spread the roots out in the hole.",
            "Backfill with soil, firming it gently, and water well.",
            "Stake it low on the windward side and mulch around the base.",
        ],
    ),
    (
        "How do I divide perennial plants?",
        [
            "Do it in early spring or autumn.",
            "Water the plant the day before.",
            "Dig up the whole clump.",
            "Split it into pieces with two forks or a spade, each with roots and shoots.",
            "Replant the pieces at the same depth and water them in.",
        ],
    ),
    (
        "How do I overseed a thin lawn?",
        [
            "Mow the lawn short and rake out dead grass.",
            "Spread a thin layer of topsoil over the bare patches.",
            "Sow grass seed at the rate on the box.",
            "Rake it in lightly and keep it moist until it germinates.",
            "Wait until the new grass is 7-8 cm tall before the first mow.",
        ],
    ),
    (
        "How do I harden off seedlings?",
        [
            "Start 1-2 weeks before planting out.",
            "Put the seedlings outside in a sheltered, shady spot for 1-2 hours.",
            "Increase the time and sun a little each day.",
            "Bring them in at night at first.",
            "Plant them out once they can stay outside day and night.",
        ],
    ),
    (
        "How do I test my soil's pH?",
        [
            "Buy a simple soil test kit.",
            "Take soil from 10 cm deep in several spots and mix it.",
            "Follow the kit's instructions with distilled water.",
            "Compare the colour to the chart.",
            "Most vegetables prefer a pH of 6-7.",
        ],
    ),
    (
        "How do I grow herbs on a windowsill?",
        [
            "Choose the sunniest window you have.",
            "Use pots with drainage holes and a free-draining compost.",
            "Start with easy herbs such as parsley, chives, mint and basil.",
            "Water when the top of the soil feels dry.",
            "Pick often to keep the plants bushy.",
        ],
    ),
    (
        "How do I protect plants from slugs?",
        [
            "Go out with a torch after rain and pick slugs off.",
            "Sink a shallow dish of beer into the soil as a trap.",
            "Surround plants with copper tape or grit.",
            "Water in the morning, not the evening.",
            "Encourage frogs, birds and beetles into the garden.",
        ],
    ),
    (
        "How do I plant bulbs in autumn?",
        [
            "Plant spring bulbs from September to November.",
            "Choose a spot with good drainage.",
            "Dig holes about three times as deep as each bulb is tall.",
            "Set the bulbs pointy end up, a couple of bulb-widths apart.",
            "Cover, firm the soil and water.",
        ],
    ),
]

TRAVEL = [
    (
        "How do I pack a carry-on bag efficiently?",
        [
            "Check the airline's size and weight limits.",
            "Lay out your outfits and remove a third of them.",
            "Roll clothes tightly and use packing cubes.",
            "Wear your bulkiest shoes and coat on the plane.",
            "Put liquids in a clear bag at the top for security.",
        ],
    ),
    (
        "How do I beat jet lag?",
        [
            "Shift your sleep an hour a day towards the new time zone before you go.",
            "Drink water on the flight and go easy on alcohol.",
            "On arrival, get daylight in the morning.",
            "Stay awake until a normal local bedtime.",
            "Keep naps under 30 minutes.",
        ],
    ),
    (
        "How do I find cheaper flights?",
        [
            "Compare prices on a flight search site with flexible dates.",
            "Check nearby airports at both ends.",
            "Fly midweek and avoid school holidays.",
            "Set a price alert for your route.",
            "Add up the baggage fees before you decide.",
        ],
    ),
    (
        "How do I prepare for a long-haul flight?",
        [
            "Choose an aisle or window seat when you book.",
            "Pack a small bag with water, snacks, a charger, earplugs and an eye mask.",
            "Wear loose, layered clothes and compression socks.",
            "Walk and stretch every hour or two.",
            "Keep medicines and documents in your carry-on.",
        ],
    ),
    (
        "How do I report lost luggage at the airport?",
        [
            "Go to the airline's baggage desk before leaving the arrivals hall.",
            "Show your boarding pass and bag tag receipt.",
            "Fill in a property irregularity report and keep a copy.",
            "Keep receipts for essentials you have to buy.",
            "Follow up using the reference number.",
        ],
    ),
    (
        "How do I plan a road trip?",
        [
            "Choose the start, the end and the must-see stops.",
            "Keep daily driving to 4-5 hours.",
            "Book places to sleep for busy nights.",
            "Service the car: tyres, oil, lights and wipers.",
            "Download offline maps and pack water, snacks and a first-aid kit.",
        ],
    ),
    (
        "How do I keep my valuables safe when travelling?",
        [
            "Bring only the cards and cash you need.",
            "Split money between two places.",
            "Use a bag that zips and keep it in front of you in crowds.",
            "Lock your passport in the hotel safe and carry a photo of it.",
            "Write down the numbers to cancel your cards.",
        ],
    ),
    (
        "How do I get foreign currency cheaply?",
        [
            "Use a card with no foreign transaction fees.",
            "Withdraw larger amounts from bank ATMs to limit fees.",
            "Always choose to be charged in the local currency.",
            "Avoid airport exchange booths.",
            "Tell your bank about your trip before you go.",
        ],
    ),
    (
        "How do I get through airport security quickly?",
        [
            "Put liquids under 100 ml in one clear bag.",
            "Pack the laptop where you can lift it out easily.",
            "Empty your pockets into your bag while you queue.",
            "Wear shoes you can slip off.",
            "Have your boarding pass ready.",
        ],
    ),
    (
        "How do I travel with prescription medicine?",
        [
            "Keep it in its original labelled packaging.",
            "Carry it in your hand luggage.",
            "Bring a copy of the prescription or a doctor's letter.",
            "Check the destination's rules for your medicine.",
            "Pack a few days' extra supply.",
        ],
    ),
    (
        "How do I pitch a tent?",
        [
            "Pick a flat spot clear of stones, away from dips where water collects.",
            "Lay the footprint or groundsheet down.",
            "Spread the tent out with the door facing away from the wind.",
            "Assemble the poles, clip or thread them on and raise the tent.",
            "Peg the corners at 45 degrees and tension the guy lines.",
        ],
    ),
    (
        "How do I avoid motion sickness when travelling?",
        [
            "Sit where motion is smallest: the front seat, over the wing, or mid-ship.",
            "Look at the horizon and avoid reading.",
            "Get fresh air if you can.",
            "Eat light meals before and during the trip.",
            "Take motion sickness tablets before you set off if you need them.",
        ],
    ),
]

FINANCE = [
    (
        "How do I make a monthly budget?",
        [
            "Add up your monthly take-home pay.",
            "List fixed costs such as rent, bills and loan payments.",
            "Track a month of spending to estimate food, transport and fun.",
            "Set an amount for each category, including savings.",
            "Compare with actual spending each month and adjust.",
        ],
    ),
    (
        "How do I build an emergency fund?",
        [
            "Set a first goal of one month of essential costs.",
            "Open a separate easy-access savings account.",
            "Set up an automatic transfer on payday.",
            "Put windfalls such as refunds or bonuses into it.",
            "Build up to 3-6 months of costs, and refill it after using it.",
        ],
    ),
    (
        "How do I pay off credit card debt?",
        [
            "List every card with its balance and interest rate.",
            "Pay the minimum on all of them.",
            "Put every spare amount towards the card with the highest rate.",
            "When it is paid off, move that payment to the next highest.",
            "Stop using the cards while you pay them down.",
        ],
    ),
    (
        "How do I compare loan offers?",
        [
            "Compare the APR, which includes interest and most fees.",
            "Check the total amount repayable, not just the monthly payment.",
            "Look for early repayment charges.",
            "Check whether the rate is fixed or variable.",
            "Choose the shortest term whose payment you can afford.",
        ],
    ),
    (
        "How do I read my payslip?",
        [
            "Find your gross pay for the period.",
            "Check each deduction: tax, social insurance, pension and others.",
            "Confirm the net pay matches what reached your bank.",
            "Check that the tax code or tax class is correct.",
            "Keep payslips for your records.",
        ],
    ),
    (
        "How do I track my spending?",
        [
            "Download a month of transactions from your bank.",
            "Put each one into a category such as food, transport or bills.",
            "Add up each category.",
            "Mark spending you would cut.",
            "Repeat monthly, or use a budgeting app that categorises automatically.",
        ],
    ),
    (
        "How do I set up automatic savings?",
        [
            "Open a savings account.",
            "Decide an amount, even a small one.",
            "Set a standing order for the day after payday.",
            "Raise it whenever your pay rises.",
            "Leave the money alone except for its purpose.",
        ],
    ),
    (
        "How do I check my credit report?",
        [
            "Request your report from the credit reference agencies in your country; a free copy is usually available.",
            "Check that your personal details are correct.",
            "Look for accounts or searches you do not recognise.",
            "Dispute errors with the agency.",
            "Check it again before applying for a loan or mortgage.",
        ],
    ),
    (
        "How do I cut down on subscriptions?",
        [
            "Go through three months of bank statements for recurring payments.",
            "List each subscription with its monthly cost.",
            "Cancel the ones you have not used in the last month.",
            "Switch yearly plans to monthly if you are unsure.",
            "Set a calendar reminder before free trials end.",
        ],
    ),
    (
        "How do I negotiate a lower bill with a provider?",
        [
            "Find what new customers are offered and what competitors charge.",
            "Call the provider and ask for the retentions team.",
            "Say you are thinking of leaving and quote the cheaper price.",
            "Be polite but ready to switch.",
            "Get the new price and contract terms in writing.",
        ],
    ),
    (
        "How do I start investing with index funds?",
        [
            "Clear high-interest debt and build an emergency fund first.",
            "Open an account with a low-cost broker, ideally a tax-advantaged one.",
            "Choose a broad, low-fee index fund.",
            "Invest a fixed amount every month.",
            "Leave it for the long term and avoid selling when markets fall.",
        ],
    ),
]

BIKES = [
    (
        "How do I fix a flat bike tyre?",
        [
            "Remove the wheel and let out any remaining air.",
            "Lever one side of the tyre off the rim with tyre levers.",
            "Pull out the tube and find the puncture; check the tyre for the sharp object.",
            "Fit a new or patched tube, slightly inflated, and push the tyre back on.",
            "Inflate to the pressure on the sidewall and refit the wheel.",
        ],
    ),
    (
        "How do I adjust rim brakes on a bike?",
        [
            "Check that the pads hit the rim squarely, not the tyre.",
            "Loosen the pad bolt, align the pad and retighten it.",
            "Turn the barrel adjuster anticlockwise to tighten the cable.",
            "Aim for the lever to stop about 2 cm from the handlebar.",
            "Spin the wheel to check that the pads do not rub.",
        ],
    ),
    (
        "How do I set the right saddle height?",
        [
            "Sit on the bike next to a wall for support.",
            "Put your heel on the pedal at its lowest point.",
            "Raise or lower the saddle until your leg is straight in that position.",
            "With the ball of the foot on the pedal, the knee should then be slightly bent.",
            "Tighten the seat post clamp to the torque printed on it.",
        ],
    ),
    (
        "How do I clean and lube a bike chain?",
        [
            "Wipe the chain with a rag while turning the pedals backwards.",
            "Scrub it with degreaser and a brush, then rinse and dry.",
            "Put one drop of chain lube on each roller.",
            "Turn the pedals for a minute to work it in.",
            "Wipe off the excess so it does not attract dirt.",
        ],
    ),
    (
        "How do I fix a bike chain that skips gears?",
        [
            "Shift to the smallest rear sprocket.",
            "If the chain is slow to climb to larger sprockets, turn the rear barrel adjuster a half turn anticlockwise.",
            "If it is slow to drop to smaller sprockets, turn it clockwise instead.",
            "Test all the gears on a stand or a quiet road.",
            "If it still skips, check for a worn chain or a bent hanger.",
        ],
    ),
    (
        "How do I replace rim brake pads?",
        [
            "Check the old pads' wear lines.",
            "Undo the pad bolt and remove the old pad.",
            "Fit the new pad, marked for left or right, in the same position.",
            "Align it with the rim and tighten the bolt.",
            "Adjust the cable tension and test the brakes.",
        ],
    ),
    (
        "How do I lock my bike securely?",
        [
            "Use a D-lock plus a cable for the front wheel.",
            "Lock to a solid, fixed stand in a busy, well-lit place.",
            "Pass the lock through the frame and the rear wheel.",
            "Keep the lock off the ground so it cannot be levered.",
            "Take lights and quick-release parts with you.",
        ],
    ),
    (
        "How do I check my bike before a ride?",
        [
            "Check both tyres for pressure and cuts.",
            "Squeeze each brake lever and rock the bike to test the brakes.",
            "Check that the chain runs smoothly.",
            "Make sure the quick releases and thru-axles are closed.",
            "Check that the lights and bell work.",
        ],
    ),
    (
        "How do I put a slipped chain back on?",
        [
            "Shift to the smallest front chainring if you can.",
            "Hold the chain on the lower teeth of the chainring.",
            "Turn the pedals slowly forwards so the chain pulls onto the teeth.",
            "Shift through the gears to check it runs smoothly.",
            "If it keeps falling off, adjust the derailleur limit screws.",
        ],
    ),
]

EVERYDAY = [
    (
        "How do I write a cover letter?",
        [
            "Address it to a named person if you can find one.",
            "Open by naming the job and why you want it.",
            "Give two or three examples of relevant results, with numbers.",
            "Link your skills to the main points of the job ad.",
            "Close with a thank-you and your availability; keep it to one page.",
        ],
    ),
    (
        "How do I prepare for a job interview?",
        [
            "Research the company, its products and recent news.",
            "Reread the job description and match your experience to each point.",
            "Prepare short stories using situation, task, action and result.",
            "Prepare two or three questions for the interviewer.",
            "Plan your route or test your video setup the day before.",
        ],
    ),
    (
        "How do I write a professional email?",
        [
            "Write a clear subject line.",
            "Start with a greeting and the person's name.",
            "State your purpose in the first sentence.",
            "Keep it short and end with the action you need and by when.",
            "Proofread it before sending.",
        ],
    ),
    (
        "How do I take good notes in a lecture?",
        [
            "Review the previous session's notes for 5 minutes beforehand.",
            "Write key ideas and questions, not every word.",
            "Use headings and leave space to add things later.",
            "Mark anything you do not understand.",
            "Summarise the lecture in a few lines the same day.",
        ],
    ),
    (
        "How do I tie a four-in-hand tie knot?",
        [
            "Drape the tie with the wide end about 30 cm lower than the narrow end.",
            "Cross the wide end over the narrow end.",
            "Wrap it behind and bring it across the front again.",
            "Pull it up through the neck loop from underneath.",
            "Push it down through the front knot and tighten.",
        ],
    ),
    (
        "How do I do a proper plank?",
        [
            "Place your forearms on the floor, elbows under your shoulders.",
            "Step your feet back so your body forms a straight line.",
            "Squeeze your glutes and brace your stomach.",
            "Keep your neck neutral and breathe steadily.",
            "Hold for 20-30 seconds, then build up over time.",
        ],
    ),
    (
        "How do I wash my hands properly?",
        [
            "Wet your hands with clean running water.",
            "Apply soap.",
            "Rub the palms, backs, between the fingers, thumbs and under the nails for 20 seconds.",
            "Rinse well.",
            "Dry with a clean towel or let them air dry.",
        ],
    ),
    (
        "How do I remove a splinter?",
        [
            "Wash your hands and the area with soap and water.",
            "Clean tweezers with rubbing alcohol.",
            "Grip the splinter close to the skin and pull it out at the angle it went in.",
            "Wash the area again and cover it with a plaster.",
            "See a doctor if it is deep, under a nail or becomes infected.",
        ],
    ),
    (
        "How do I treat a minor burn?",
        [
            "Cool it under cool running water for 20 minutes.",
            "Remove rings or tight clothing near the burn.",
            "Do not use ice, butter or creams.",
            "Cover it loosely with cling film or a sterile dressing.",
            "Get medical help if it is large, deep, or on the face, hands or genitals.",
        ],
    ),
    (
        "How do I teach a puppy to sit?",
        [
            "Hold a treat close to the puppy's nose.",
            "Move it up and slightly back over the head.",
            'As the bottom goes down, say "sit" and give the treat.',
            "Repeat in short sessions of 5 minutes a few times a day.",
            "Slowly phase out the lure and reward only some sits.",
        ],
    ),
    (
        "How do I introduce a new cat to my home?",
        [
            "Set up a quiet room with food, water, a litter tray and a hiding place.",
            "Keep the cat there for a few days.",
            "Swap bedding with other pets so they learn each other's scent.",
            "Let them see each other briefly through a gap or a gate.",
            "Increase the time together slowly and give each its own resources.",
        ],
    ),
    (
        "How do I clean a fish tank?",
        [
            "Unplug the heater and filter.",
            "Scrub algae off the glass with an aquarium scraper.",
            "Siphon out 10-20 % of the water, vacuuming the gravel as you go.",
            "Rinse the filter sponge in the removed tank water, not tap water.",
            "Refill with dechlorinated water at the same temperature and plug everything back in.",
        ],
    ),
]

WRITTEN = COOKING + HOUSEHOLD + COMPUTING + GARDENING + TRAVEL + FINANCE + BIKES + EVERYDAY
