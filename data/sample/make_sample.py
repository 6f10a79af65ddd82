"""Generate the synthetic customer-support ticket sample used by the default demo job.

Every fragment below was hand-written for shardtune; the output is synthetic and contains
no real customer data. Run `python data/sample/make_sample.py` to regenerate train.jsonl
and test.jsonl next to this file. Output is deterministic (random.Random(0), stdlib only).
"""
import json
import random
from pathlib import Path

LABELS = ["billing", "shipping", "account_access", "refund", "technical_issue", "cancellation"]
N_TRAIN, N_TEST = 60, 20  # rows per class
HELD_OUT_SHARE = 0.5  # share of test rows built from held-out core sentences
CHANNELS = ["email", "chat", "phone"]

PRODUCTS = ["Aurora headphones", "Nimbus smart speaker", "Pebble fitness band", "Lumen desk lamp",
            "Kite e-reader", "Orbit webcam", "Drift wireless charger", "Vertex laptop stand",
            "Tala coffee grinder", "Echo-9 keyboard"]
DEVICES = ["Aurora headphones", "Nimbus smart speaker", "Pebble fitness band", "Kite e-reader",
           "Orbit webcam"]  # products that have firmware, batteries, an app
PLANS = ["Basic plan", "Plus plan", "Pro plan", "Family plan", "monthly box", "annual membership"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August",
          "September", "October", "November", "December"]

GREETINGS = ["Hi,", "Hello,", "Hi there,", "Hey,", "Good morning,", "Dear support team,",
             "Hello support,", "Hi team,", "To whom it may concern,", "Yo,", "Good afternoon,"]
CLOSERS = ["Thanks.", "Thank you!", "Thanks in advance.", "Appreciate the help.", "Please advise.",
           "Regards.", "Cheers.", "Kind regards, a long-time customer.", "Hope you can help.",
           "Please fix this.", "Waiting for your reply.", "Thx"]
POLITE = ["Sorry to bother you.", "I know you're busy, but could you take a look?", "No rush."]
ANGRY = ["This is ridiculous.", "Honestly this is unacceptable.", "I'm really fed up.",
         "Third time I'm writing about this!!", "Sort it out please, I'm losing patience.",
         "Worst experience I've had with an online shop."]

# Core sentences per class. {order} {amount} {amount2} {fee} {product} {device} {plan} {plan2}
# {date} {days} are filled in at random. Some cores deliberately use another class's vocabulary.
CORES = {
    "billing": [
        "I was charged twice for order {order}.", "you double charged me!!",
        "Overcharged again this month.", "Can you send me an invoice for order {order}?",
        "There's a charge of {amount} on my statement that I don't recognise.",
        "Why was I billed {amount} this month when my plan is only {amount2}?",
        "need invoice for {order} asap", "How do I update the payment method on file?",
        "My card got declined but the payment still shows as pending.",
        "The invoice for {order} has the wrong company name on it.",
        "I need a VAT receipt for my last purchase.", "what is this {amount} charge from you guys",
        "You charged me for the {plan} but I'm on the {plan2}.",
        "The price at checkout was higher than what the product page said for the {product}.",
        "I got billed for shipping even though the order was over the free shipping limit.",
        "I see two pending authorisations of {amount} for a single order.",
        "Is there a way to pay by bank transfer instead of card?",
        "The discount code didn't apply and I ended up paying full price, {amount}.",
        "My annual renewal took {amount} without any reminder beforehand.",
        "The tax on my invoice looks wrong.", "I was charged in euros instead of dollars.",
        "Can I split the payment for order {order} across two cards?",
        "The billing address on my invoices is outdated, please correct it.",
        "My bank shows a payment to you on {date} but I didn't buy anything that day.",
        "Please explain the extra {amount} fee on my latest bill.",
        "Payment failed three times at checkout, is something wrong with your payment page?",
        "Can you resend the receipt for {order}? I can't find it anywhere.",
        "I'd like to switch from monthly to yearly billing.",
        "My promo price ended and now I'm paying {amount} a month, nobody told me.",
        "The payment for my {plan} went through twice on {date}.",
    ],
    "shipping": [
        "Where is my order {order}?", "wheres my package at", "still no delivery, seriously?",
        "My package was supposed to arrive on {date} and it still hasn't.",
        "Tracking for {order} hasn't updated in {days} days.", "Do you ship to Canada?",
        "The courier says delivered but there is nothing at my door.",
        "Can I change the delivery address for order {order}?", "Do you deliver on weekends?",
        "The box arrived crushed and the {product} inside is scratched.",
        "I only received part of my order, the {product} is missing.",
        "How long does express shipping usually take?",
        "The tracking link for {order} just gives me an error page.",
        "My order has been stuck in processing for a week.",
        "Can I pick the order up myself instead of having it delivered?",
        "The parcel was left with a neighbour I don't even know.",
        "Why is shipping {fee} for such a small item?",
        "Is it possible to speed up delivery on {order}? I need it by {date}.",
        "The driver never showed up during the delivery window.",
        "My package was returned to sender, what happens now?",
        "I got someone else's parcel instead of the {product}.",
        "The estimated delivery date keeps moving back.",
        "Can you hold the shipment until I'm back from holiday on {date}?",
        "Customs is asking me to pay {fee} before they release my parcel.",
        "order {order} shows shipped but there's no tracking number",
        "My order has said out for delivery since yesterday morning.",
        "The {product} was sent to my old address even though I updated it.",
    ],
    "account_access": [
        "I can't log in to my account.", "can't sign in at all", "locked out of my account again",
        "The password reset email never arrives.", "I don't receive the two-factor code anymore.",
        "My account got locked after too many login attempts.",
        "I changed phones and lost my authenticator app, now I can't get in.",
        "It says my email isn't registered but I've ordered from you before.",
        "I think someone else logged into my account last night.",
        "How do I change the email address on my profile?",
        "The password reset link says it has expired every time.",
        "I made two accounts by mistake, can you merge them?",
        "My account was suspended and nobody told me why.",
        "Login keeps looping back to the sign-in page.",
        "forgot my password and the reset doesnt work",
        "The app says invalid credentials even though my password is definitely right.",
        "I need to update the username on my account.",
        "Sign in with Google stopped working for my account.",
        "My account was deactivated because I hadn't used it for a while.",
        "I'm locked out and need to check a charge on my account.",
        "Please unlock my account, I need to download my invoices.",
        "How do I remove an old device from my account?",
        "It keeps asking me to verify my identity over and over.",
        "The security questions I set up years ago don't seem to work.",
        "I can't get into my account to see the status of order {order}.",
        "My verification code expires before it even reaches me.",
    ],
    "refund": [
        "I'd like a refund for order {order}.", "refund please, order {order}",
        "still waiting on my refund!!", "When will the {amount} refund show up on my card?",
        "I returned the {product} {days} days ago and still haven't got my money back.",
        "The {product} arrived broken, I want my money back, not a replacement.",
        "You refunded {amount} but I paid {amount2}.", "Do you refund the restocking fee as well?",
        "Can I get my money back for the {plan} I never used?",
        "My refund was approved on {date} but nothing has arrived.",
        "I was told the refund would take 5 business days, it has been {days}.",
        "How do I return an item for a full refund?",
        "I cancelled my order before it shipped, so where is my refund?",
        "The package never arrived, please just refund me.",
        "Please refund the duplicate charge of {amount}.",
        "I want a partial refund since one item from {order} was missing.",
        "Item dropped off with the return label, but the refund status still says pending.",
        "Can the refund go to a different card? The old one has expired.",
        "I was offered store credit but I would prefer the money back.",
        "The {product} stopped working after {days} days and I'd like a refund.",
        "Your policy says 30 days, I'm on day {days}, can I still return it for a refund?",
        "The refund only covered the item, not the {fee} shipping I paid.",
        "Got the refund confirmation email but my bank shows nothing.",
        "I want my money back for the {product}, it's nothing like the photos.",
        "Refund for {order} please, I changed my mind about the {product}.",
    ],
    "technical_issue": [
        "The app crashes every time I open it.", "the app keeps freezing", "is the site down?",
        "The website won't load on my phone.", "I get an error 500 when I try to check out.",
        "The {device} won't connect to wifi.", "The {device} keeps disconnecting from bluetooth.",
        "The firmware update failed and now the {device} won't turn on.",
        "The page just spins forever when I click place order.",
        "Notifications stopped working after the last update.",
        "Pictures on the product pages don't show up.", "When I tap add to cart nothing happens.",
        "The app has been really slow since version 4.2.",
        "Search on the website returns nothing, whatever I type.",
        "I can't upload a photo to my review, it keeps failing.",
        "The {device} makes a loud buzzing noise when it's on.",
        "The {device} battery drains in a couple of hours.",
        "The desktop app only shows a blank white screen.",
        "Syncing between the app and the {device} has been broken for {days} days.",
        "The checkout button is greyed out even though my cart isn't empty.",
        "I keep getting logged out every few minutes while browsing.",
        "The Kite e-reader display flickers since the update.",
        "The QR code in the setup guide leads to a broken page.",
        "The {device} won't pair with my phone no matter what I try.",
        "Order history page shows an error instead of my orders.",
        "The payment page won't load at all in my browser.",
    ],
    "cancellation": [
        "Please cancel my subscription.", "just cancel everything please",
        "cancel order {order} pls", "I want to cancel order {order} before it ships.",
        "How do I cancel my {plan}?", "Cancel my membership effective immediately.",
        "I tried to cancel online but there is no cancel button anywhere.",
        "Don't renew my plan next month, I'm done.", "Stop my {plan}, I don't need it anymore.",
        "I ordered the {product} by mistake, can you cancel it?",
        "Can I pause my subscription instead of cancelling?",
        "Please close my account and stop all future charges.",
        "I cancelled last month but I'm still being charged {amount}.",
        "I want to turn off auto-renewal on my {plan}.", "Unsubscribe me from the {plan}, thanks.",
        "Is there a fee if I cancel before the contract ends?",
        "Your price went up to {amount} so I'd like to end my subscription.",
        "I'm moving abroad and need to terminate my {plan}.",
        "Please cancel the {product} in order {order} and keep the rest.",
        "I want to downgrade, or cancel if that isn't possible.",
        "Can you confirm my cancellation went through? I never got a confirmation.",
        "How do I cancel the free trial before it charges me {amount}?",
        "I'd like to cancel my order and get my money back.",
        "I signed up for the annual plan by accident, please cancel it.",
        "Please don't send the {product}, I changed my mind, cancel order {order}.",
    ],
}

# Optional follow-up details per class (0 or 1 is added to a ticket).
DETAILS = {
    "billing": ["It was {amount} on {date}.", "This is the second time it has happened.",
                "I checked my bank app and it's definitely there.", "The order number is {order}.",
                "My accountant needs the paperwork by {date}."],
    "shipping": ["The order number is {order}.", "It was a gift for {date}.",
                 "The courier hotline just hangs up on me.", "I've been home all day.",
                 "I paid {fee} for express delivery."],
    "account_access": ["I've tried three different browsers.", "I last logged in on {date}.",
                       "I already cleared my cookies.", "My last order was {order}.",
                       "I still get the marketing emails, so the address is right."],
    "refund": ["The order number is {order}.", "I paid {amount} for it.",
               "The courier confirmed the return on {date}.", "I still have the receipt.",
               "I sent it back in the original box."],
    "technical_issue": ["I already tried restarting it.", "I'm on the latest version.",
                        "It worked fine until {date}.", "Reinstalling didn't help.",
                        "It happens on both my laptop and my phone."],
    "cancellation": ["I've been a member since {date}.", "I don't want to be billed again.",
                     "Please confirm by email.", "My next renewal is on {date}.",
                     "Nothing wrong with the service, I just don't use it."],
}


def slot_values(rng):
    """One set of slot values per ticket, so core and detail agree on order number etc."""
    cents = ["00", "50", "99", "25", "49", "95"]
    amount, amount2 = (f"${rng.randint(4, 320)}.{rng.choice(cents)}" for _ in range(2))
    plan, plan2 = rng.sample(PLANS, 2)
    return dict(order=f"#{rng.randint(10000, 99999)}", amount=amount, amount2=amount2,
                fee=f"${rng.randint(3, 24)}.{rng.choice(cents[:3])}", product=rng.choice(PRODUCTS),
                device=rng.choice(DEVICES), plan=plan, plan2=plan2, days=rng.randint(6, 45),
                date=f"{rng.choice(MONTHS)} {rng.randint(1, 28)}")


def add_typo(text, rng):
    """Swap two neighbouring letters or drop one letter in a random longer word."""
    words = text.split()
    idx = [i for i, w in enumerate(words) if len(w) > 4 and w.isalpha()]
    if not idx:
        return text
    i = rng.choice(idx)
    w, j = words[i], rng.randint(1, len(words[i]) - 3)
    words[i] = w[:j] + w[j + 1] + w[j] + w[j + 2:] if rng.random() < 0.5 else w[:j] + w[j + 1:]
    return " ".join(words)


def make_ticket(label, cores, rng):
    channel = rng.choice(CHANNELS)
    chatty = channel == "chat"
    parts, slots = [], slot_values(rng)
    if rng.random() < (0.2 if chatty else 0.55):
        parts.append(rng.choice(GREETINGS))
    parts.append(rng.choice(cores).format(**slots))
    if rng.random() < 0.45:
        parts.append(rng.choice(DETAILS[label]).format(**slots))
    tone = rng.random()
    if tone < 0.15:
        parts.append(rng.choice(ANGRY))
    elif tone < 0.25:
        parts.append(rng.choice(POLITE))
    if rng.random() < (0.2 if chatty else 0.5):
        parts.append(rng.choice(CLOSERS))
    while len(" ".join(parts).split()) > 40:  # keep tickets at 4-40 words
        parts.pop()
    if parts[0] in GREETINGS and not parts[1].startswith(("I ", "I'")):
        parts[1] = parts[1][0].lower() + parts[1][1:]  # "Hi, the parcel..." not "Hi, The..."
    last = len(parts) - 1  # end every part but the last with punctuation
    text = " ".join(p if p[-1] in ".!?," or i == last else p + "." for i, p in enumerate(parts))
    if rng.random() < 0.12:
        text = add_typo(text, rng)
    if chatty and rng.random() < 0.3:
        text = text.lower().rstrip(".!")
    return {"text": text, "label": label, "channel": channel}


def main():
    rng = random.Random(0)
    out_dir = Path(__file__).resolve().parent
    seen, train, test = set(), [], []
    for label in LABELS:
        # A third of each class's core sentences is held out: test rows use them half the
        # time, so the test split measures paraphrase generalisation, not template recall.
        cores = CORES[label][:]
        rng.shuffle(cores)
        held_out, shared = cores[:len(cores) // 3], cores[len(cores) // 3:]
        for split, n in ((train, N_TRAIN), (test, N_TEST)):
            rows = []  # texts are unique across both splits (case-insensitive)
            while len(rows) < n:
                pool = held_out if split is test and rng.random() < HELD_OUT_SHARE else shared
                row = make_ticket(label, pool, rng)
                key = row["text"].lower()
                if key not in seen and 4 <= len(row["text"].split()) <= 40:
                    seen.add(key)
                    rows.append(row)
            split.extend(rows)
    rng.shuffle(train)
    rng.shuffle(test)

    train_texts, test_texts = {r["text"] for r in train}, {r["text"] for r in test}
    assert len(train_texts) == len(train) and len(test_texts) == len(test), "duplicate text"
    assert not train_texts & test_texts, "train/test overlap"

    n = 0
    for name, rows in (("train.jsonl", train), ("test.jsonl", test)):
        with open(out_dir / name, "w", encoding="utf-8") as f:
            for row in rows:
                n += 1
                f.write(json.dumps({"id": f"t{n:04d}", **row}, ensure_ascii=False) + "\n")
        print(f"wrote {len(rows)} rows to {out_dir / name}")


if __name__ == "__main__":
    main()
