// Cognito's user-pool JSON API, called the way Amplify calls it: a POST per action with X-Amz-Target, no AWS
// credentials (the app client id, a code, a password or the user's own access token authorizes each call).

export class CognitoError extends Error {
  constructor(type, message) {
    super(message);
    this.type = type; // e.g. NotAuthorizedException, UsernameExistsException, CodeMismatchException
  }
}

export function cognitoClient({ endpoint, clientId }) {
  async function call(action, body) {
    let response;
    try {
      response = await fetch(endpoint, {
        method: "POST",
        headers: {
          "Content-Type": "application/x-amz-json-1.1",
          "X-Amz-Target": `AWSCognitoIdentityProviderService.${action}`,
        },
        body: JSON.stringify(body),
        cache: "no-store",
        credentials: "omit",
      });
    } catch {
      throw new CognitoError("NetworkError", "Cannot reach the sign-in service. Check your connection and try again.");
    }
    const text = await response.text();
    let data = {};
    try {
      data = text ? JSON.parse(text) : {};
    } catch {
      data = {};
    }
    if (!response.ok) {
      const type = String(data.__type || data.code || "UnknownError").split("#").pop();
      throw new CognitoError(type, data.message || data.Message || `The sign-in service answered ${response.status}.`);
    }
    return data;
  }

  return {
    signUp: ({ email, password, name, handle }) =>
      call("SignUp", {
        ClientId: clientId,
        Username: email,
        Password: password,
        UserAttributes: [
          { Name: "email", Value: email },
          { Name: "name", Value: name },
          { Name: "preferred_username", Value: handle },
        ],
      }),
    confirmSignUp: (email, code) => call("ConfirmSignUp", { ClientId: clientId, Username: email, ConfirmationCode: code }),
    resendCode: (email) => call("ResendConfirmationCode", { ClientId: clientId, Username: email }),
    signIn: (email, password) =>
      call("InitiateAuth", {
        ClientId: clientId,
        AuthFlow: "USER_PASSWORD_AUTH",
        AuthParameters: { USERNAME: email, PASSWORD: password },
      }),
    // The answer to InitiateAuth's SOFTWARE_TOKEN_MFA challenge: the code the user's authenticator app shows.
    answerSoftwareTokenMfa: (username, code, session) =>
      call("RespondToAuthChallenge", {
        ClientId: clientId,
        ChallengeName: "SOFTWARE_TOKEN_MFA",
        Session: session,
        ChallengeResponses: { USERNAME: username, SOFTWARE_TOKEN_MFA_CODE: code },
      }),
    refresh: (refreshToken) =>
      call("InitiateAuth", {
        ClientId: clientId,
        AuthFlow: "REFRESH_TOKEN_AUTH",
        AuthParameters: { REFRESH_TOKEN: refreshToken },
      }),
    forgotPassword: (email) => call("ForgotPassword", { ClientId: clientId, Username: email }),
    confirmForgotPassword: (email, code, password) =>
      call("ConfirmForgotPassword", { ClientId: clientId, Username: email, ConfirmationCode: code, Password: password }),
    globalSignOut: (accessToken) => call("GlobalSignOut", { AccessToken: accessToken }),
    // The refresh token and every access token issued from it (the app client's token revocation).
    revokeToken: (refreshToken) => call("RevokeToken", { ClientId: clientId, Token: refreshToken }),
    getUser: (accessToken) => call("GetUser", { AccessToken: accessToken }),
    // An authenticator app: a new key for the user, the app's first code to prove it holds it, then TOTP on.
    associateSoftwareToken: (accessToken) => call("AssociateSoftwareToken", { AccessToken: accessToken }),
    verifySoftwareToken: (accessToken, code, deviceName) =>
      call("VerifySoftwareToken", { AccessToken: accessToken, UserCode: code, FriendlyDeviceName: deviceName }),
    setSoftwareTokenMfa: (accessToken, enabled) =>
      call("SetUserMFAPreference", {
        AccessToken: accessToken,
        SoftwareTokenMfaSettings: { Enabled: enabled, PreferredMfa: enabled },
      }),
  };
}
