"""The yardstick: a bare FastAPI endpoint that only validates the same referral body."""

from fastapi import FastAPI

from services.referrals.schemas import ReferralIn

app = FastAPI()


@app.post("/v1/referrals", status_code=201)
async def validate_only(referral: ReferralIn) -> dict:
    return {"accepted": True}
