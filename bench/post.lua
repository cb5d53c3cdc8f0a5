-- One referral per request, each for a different resident (so duplicate
-- detection does its real work, not a pathological growing match).
counter = 0
math.randomseed(os.time() + os.clock() * 1000000)
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("KT_BENCH_TOKEN")
request = function()
  counter = counter + 1
  local body = string.format([[{"channel":"phone","resident":{"name":"Resident %d-%d","date_of_birth":"1941-03-02","phone":"01843 577000","address":{"line1":"12 Northdown Road","town":"Margate","postcode":"CT9 2RN"},"contact_preference":"phone","vulnerabilities":["shielding"]},"consent":{"to_share":true},"requests":[{"type":"food","details":"Weekly shop"},{"type":"prescription","details":"Boots"}]}]], math.random(1, 1000000000), counter)
  return wrk.format(nil, nil, nil, body)
end
